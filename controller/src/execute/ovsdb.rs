//! The project's own OVSDB client: JSON-RPC 1.0 as used by RFC 7047, over a
//! unix socket (`unix:/var/run/openvswitch/db.sock`, [`DEFAULT_TARGET`]) or
//! TCP (`tcp:HOST:PORT`).
//!
//! One connection per [`OvsdbClient`] (cheap to clone: clones share it) with
//! two tasks:
//! - a reader that splits the byte stream into JSON values (the server sends
//!   them back to back without delimiters, see [`JsonFramer`]), matches
//!   replies to requests by `id`, answers the server's `echo` requests and
//!   hands `update`/`locked`/`stolen` notifications to an optional channel
//!   ([`OvsdbClient::take_notifications`]);
//! - a writer, so that a server that stops reading never blocks the reader.
//!
//! Every request has a deadline ([`OvsdbConfig::request_timeout`]). Input
//! that is not a JSON-RPC message (bad JSON, a value that is not an object,
//! a message above [`OvsdbConfig::max_message_bytes`]) fails the connection
//! alone: the pending requests get the error as a value, a warning is
//! logged, later requests get [`OvsdbError::Disconnected`]. Nothing the
//! server sends can panic or hang the client.
//!
//! [`OvsdbClient::transact`] turns both a JSON-RPC error and a per-operation
//! `{"error": ...}` result into [`OvsdbError::Transaction`]; the [`op`]
//! module builds operations and the [`datum`] module reads OVSDB values
//! (`["uuid", ..]`, `["set", ..]`, `["map", ..]`) from results.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// The local Open vSwitch database socket.
pub const DEFAULT_TARGET: &str = "unix:/var/run/openvswitch/db.sock";

/// Size of one socket read.
const READ_CHUNK: usize = 64 * 1024;
/// Messages queued for the writer task.
const WRITE_QUEUE: usize = 256;

/// Errors of the OVSDB client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OvsdbError {
    /// The target string is not `unix:PATH` or `tcp:HOST:PORT`.
    #[error("bad OVSDB target {target:?}: {why}")]
    BadTarget {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        why: String,
    },
    /// The connection could not be opened.
    #[error("cannot connect to OVSDB at {target}: {why}")]
    Connect {
        /// The target.
        target: String,
        /// The OS error or timeout.
        why: String,
    },
    /// The connection is closed (by the server, by an I/O error, by
    /// [`OvsdbClient::close`], or after malformed input).
    #[error("OVSDB connection closed: {reason}")]
    Disconnected {
        /// Why.
        reason: String,
    },
    /// No reply before the request's deadline.
    #[error("OVSDB request {method} timed out after {after:?}")]
    Timeout {
        /// The JSON-RPC method.
        method: String,
        /// The deadline.
        after: Duration,
    },
    /// The server sent something that is not a JSON-RPC message; the
    /// connection was closed.
    #[error("malformed input from the OVSDB server: {why}")]
    Malformed {
        /// What was wrong.
        why: String,
    },
    /// One message from the server exceeded the size cap; the connection
    /// was closed.
    #[error("OVSDB message exceeds the cap of {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: usize,
    },
    /// A JSON-RPC request other than `transact` got an error reply.
    #[error("OVSDB {method} failed: {error}")]
    Rpc {
        /// The JSON-RPC method.
        method: String,
        /// The `error` member of the reply.
        error: Value,
    },
    /// A `transact` failed. `index` is the position of the failing element
    /// in the result array: `Some(i)` with `i < ops.len()` when operation
    /// `i` failed (e.g. a `wait` that timed out, a constraint violation),
    /// `Some(ops.len())` when the commit failed as a whole (e.g. a
    /// referential-integrity violation), `None` when the JSON-RPC request
    /// itself was refused (unknown database, malformed operation).
    #[error("OVSDB transaction failed{}: {error}{}", at(*.index), details_suffix(.details))]
    Transaction {
        /// Position of the error in the result array (see above).
        index: Option<usize>,
        /// The error tag, e.g. `"constraint violation"`.
        error: String,
        /// The server's explanation, when it gave one.
        details: Option<String>,
    },
    /// A reply was well-formed JSON-RPC but not what the method returns.
    #[error("unexpected OVSDB reply to {method}: {why}")]
    BadReply {
        /// The JSON-RPC method.
        method: String,
        /// What was wrong.
        why: String,
    },
    /// A request could not be encoded.
    #[error("cannot encode OVSDB request: {0}")]
    Encode(String),
}

fn at(index: Option<usize>) -> String {
    index
        .map(|i| format!(" at element {i}"))
        .unwrap_or_default()
}

fn details_suffix(details: &Option<String>) -> String {
    details
        .as_ref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

/// Splits an OVSDB `error` value (`{"error": tag, "details": text}` or a
/// bare string) into tag and details.
fn error_parts(v: &Value) -> (String, Option<String>) {
    match v {
        Value::String(s) => (s.clone(), None),
        Value::Object(o) => {
            let error = match o.get("error") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => v.to_string(),
            };
            let details = match o.get("details") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Null) | None => None,
                Some(other) => Some(other.to_string()),
            };
            (error, details)
        }
        other => (other.to_string(), None),
    }
}

/// Where the database server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OvsdbTarget {
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `tcp:HOST:PORT` (IPv6 literals in brackets: `tcp:[::1]:6640`).
    Tcp {
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
    },
}

impl OvsdbTarget {
    /// Parses `unix:PATH` or `tcp:HOST:PORT`.
    pub fn parse(s: &str) -> Result<Self, OvsdbError> {
        let bad = |why: &str| OvsdbError::BadTarget {
            target: s.to_string(),
            why: why.to_string(),
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("empty socket path"));
            }
            return Ok(OvsdbTarget::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("tcp:") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| bad("expected HOST:PORT"))?;
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            if host.is_empty() {
                return Err(bad("empty host"));
            }
            let port: u16 = port.parse().map_err(|_| bad("bad port number"))?;
            if port == 0 {
                return Err(bad("port 0"));
            }
            return Ok(OvsdbTarget::Tcp {
                host: host.to_string(),
                port,
            });
        }
        Err(bad("expected unix:PATH or tcp:HOST:PORT"))
    }
}

impl FromStr for OvsdbTarget {
    type Err = OvsdbError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OvsdbTarget::parse(s)
    }
}

impl fmt::Display for OvsdbTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OvsdbTarget::Unix(p) => write!(f, "unix:{}", p.display()),
            OvsdbTarget::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp:[{host}]:{port}")
            }
            OvsdbTarget::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
        }
    }
}

/// Settings of a connection.
#[derive(Debug, Clone)]
pub struct OvsdbConfig {
    /// Deadline for opening the connection.
    pub connect_timeout: Duration,
    /// Default deadline of one request.
    pub request_timeout: Duration,
    /// Largest single message accepted from the server.
    pub max_message_bytes: usize,
    /// Notifications buffered for [`OvsdbClient::take_notifications`]
    /// (further ones are dropped with a warning).
    pub notification_capacity: usize,
}

impl Default for OvsdbConfig {
    fn default() -> Self {
        OvsdbConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_message_bytes: 32 << 20,
            notification_capacity: 256,
        }
    }
}

/// A notification (a request without `id`) from the server, such as
/// `update` for a `monitor`.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The method, e.g. `"update"`.
    pub method: String,
    /// Its params.
    pub params: Value,
}

/// Incremental splitter for a stream of concatenated JSON objects.
///
/// A small scanner (string- and escape-aware brace counting) finds where
/// each top-level value ends, in O(n) over the stream however the bytes are
/// split; the complete part is then parsed with
/// `serde_json::Deserializer::from_slice(..).into_iter::<Value>()` and a
/// partial value stays buffered for the next read. A top-level value that
/// does not start with `{` (JSON-RPC messages are objects), invalid JSON or
/// a value longer than the cap are errors; after an error the framer stays
/// failed.
#[derive(Debug)]
pub struct JsonFramer {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned.
    scanned: usize,
    /// End of the last complete value in `buf`.
    complete: usize,
    /// Start of the value being scanned.
    value_start: usize,
    depth: usize,
    in_string: bool,
    escape: bool,
    cap: usize,
    failed: Option<OvsdbError>,
}

impl JsonFramer {
    /// A framer accepting values of at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        JsonFramer {
            buf: Vec::new(),
            scanned: 0,
            complete: 0,
            value_start: 0,
            depth: 0,
            in_string: false,
            escape: false,
            cap,
            failed: None,
        }
    }

    /// Bytes of a partial value waiting for more input.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Adds bytes and appends every value they complete to `out`, in
    /// order. On an error, the values that were complete before the bad
    /// input are still appended.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Value>) -> Result<(), OvsdbError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.buf.extend_from_slice(bytes);
        let scanned = self.scan();
        let parsed = self.take_complete(out);
        let r = parsed.and(scanned);
        match &r {
            Err(e) => self.failed = Some(e.clone()),
            Ok(()) if self.depth == 0 => {
                // Only whitespace is left between values.
                self.buf.clear();
                self.scanned = 0;
                self.value_start = 0;
            }
            Ok(()) => {}
        }
        r
    }

    /// Scans the new bytes, moving `complete` past every finished value.
    fn scan(&mut self) -> Result<(), OvsdbError> {
        let from = self.scanned;
        for (off, &b) in self.buf.get(from..).unwrap_or_default().iter().enumerate() {
            let i = from + off;
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' if self.depth > 0 => self.in_string = true,
                b'{' | b'[' if self.depth > 0 => self.depth += 1,
                b'{' => {
                    self.depth = 1;
                    self.value_start = i;
                }
                b'}' | b']' if self.depth > 0 => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        if i + 1 - self.value_start > self.cap {
                            self.scanned = i + 1;
                            return Err(OvsdbError::TooLarge { limit: self.cap });
                        }
                        self.complete = i + 1;
                    }
                }
                b' ' | b'\t' | b'\r' | b'\n' if self.depth == 0 => {}
                _ if self.depth == 0 => {
                    self.scanned = i;
                    return Err(OvsdbError::Malformed {
                        why: format!(
                            "expected a JSON object, got byte 0x{b:02x} ({:?})",
                            char::from(b)
                        ),
                    });
                }
                _ => {}
            }
        }
        self.scanned = self.buf.len();
        if self.depth > 0 && self.buf.len() - self.value_start > self.cap {
            return Err(OvsdbError::TooLarge { limit: self.cap });
        }
        Ok(())
    }

    /// Parses and removes the complete values at the front of the buffer.
    fn take_complete(&mut self, out: &mut Vec<Value>) -> Result<(), OvsdbError> {
        if self.complete == 0 {
            return Ok(());
        }
        let done = self.buf.get(..self.complete).unwrap_or_default();
        let mut r = Ok(());
        for v in serde_json::Deserializer::from_slice(done).into_iter::<Value>() {
            match v {
                Ok(v) => out.push(v),
                Err(e) => {
                    r = Err(OvsdbError::Malformed {
                        why: format!("invalid JSON: {e}"),
                    });
                    break;
                }
            }
        }
        self.buf.drain(..self.complete);
        self.scanned -= self.complete;
        self.value_start = self.value_start.saturating_sub(self.complete);
        self.complete = 0;
        r
    }
}

/// A decoded reply: `result` and `error` members.
struct Response {
    result: Value,
    error: Value,
}

type Reply = oneshot::Sender<Result<Response, OvsdbError>>;

#[derive(Default)]
struct State {
    pending: HashMap<u64, Reply>,
    closed: Option<String>,
}

/// State shared by the client handles and the connection tasks.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the connection closed and fails every pending request.
    fn fail(&self, err: OvsdbError) {
        let pending: Vec<Reply> = {
            let mut st = self.lock();
            if st.closed.is_none() {
                st.closed = Some(err.to_string());
            }
            st.pending.drain().map(|(_, tx)| tx).collect()
        };
        for tx in pending {
            let _ = tx.send(Err(err.clone()));
        }
    }
}

struct Inner {
    target: OvsdbTarget,
    cfg: OvsdbConfig,
    tx: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    notifications: Mutex<Option<mpsc::Receiver<Notification>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(PoisonError::into_inner);
        for t in tasks.drain(..) {
            t.abort();
        }
    }
}

/// A connection to an OVSDB server. Clones share the connection; it is
/// closed by [`OvsdbClient::close`] or when the last clone is dropped.
#[derive(Clone)]
pub struct OvsdbClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for OvsdbClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OvsdbClient")
            .field("target", &self.inner.target)
            .field("closed", &self.is_closed())
            .finish()
    }
}

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

async fn open(target: &OvsdbTarget) -> std::io::Result<(BoxRead, BoxWrite)> {
    match target {
        OvsdbTarget::Unix(path) => {
            let s = tokio::net::UnixStream::connect(path).await?;
            let (r, w) = s.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        OvsdbTarget::Tcp { host, port } => {
            let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            let _ = s.set_nodelay(true);
            let (r, w) = s.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
    }
}

impl OvsdbClient {
    /// Connects to `target` (`unix:PATH` or `tcp:HOST:PORT`) with the
    /// default [`OvsdbConfig`].
    pub async fn connect(target: &str) -> Result<Self, OvsdbError> {
        Self::connect_with(&OvsdbTarget::parse(target)?, OvsdbConfig::default()).await
    }

    /// Connects to `target` with the given settings.
    pub async fn connect_with(target: &OvsdbTarget, cfg: OvsdbConfig) -> Result<Self, OvsdbError> {
        let (rd, wr) = match tokio::time::timeout(cfg.connect_timeout, open(target)).await {
            Ok(Ok(halves)) => halves,
            Ok(Err(e)) => {
                return Err(OvsdbError::Connect {
                    target: target.to_string(),
                    why: e.to_string(),
                })
            }
            Err(_) => {
                return Err(OvsdbError::Connect {
                    target: target.to_string(),
                    why: format!("timed out after {:?}", cfg.connect_timeout),
                })
            }
        };
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let (ntx, nrx) = mpsc::channel(cfg.notification_capacity.max(1));
        let label = target.to_string();
        let writer = tokio::spawn(writer_task(wr, rx, shared.clone(), label.clone()));
        let reader = tokio::spawn(reader_task(
            rd,
            shared.clone(),
            tx.downgrade(),
            ntx,
            cfg.max_message_bytes,
            label,
        ));
        debug!(target = %target, "OVSDB connected");
        Ok(OvsdbClient {
            inner: Arc::new(Inner {
                target: target.clone(),
                cfg,
                tx,
                shared,
                next_id: AtomicU64::new(1),
                notifications: Mutex::new(Some(nrx)),
                tasks: Mutex::new(vec![reader, writer]),
            }),
        })
    }

    /// The server this client talks to.
    pub fn target(&self) -> &OvsdbTarget {
        &self.inner.target
    }

    /// True once the connection has failed or been closed.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.lock().closed.is_some()
    }

    /// The channel of server notifications (`update`, `locked`, ...); only
    /// the first call gets it.
    pub fn take_notifications(&self) -> Option<mpsc::Receiver<Notification>> {
        self.inner
            .notifications
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    async fn call(
        &self,
        method: &str,
        params: Value,
        after: Duration,
    ) -> Result<Response, OvsdbError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let msg = json!({"id": id, "method": method, "params": params});
        let bytes = serde_json::to_vec(&msg).map_err(|e| OvsdbError::Encode(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.inner.shared.lock();
            if let Some(reason) = &st.closed {
                return Err(OvsdbError::Disconnected {
                    reason: reason.clone(),
                });
            }
            st.pending.insert(id, tx);
        }
        let exchange = async {
            if self.inner.tx.send(bytes).await.is_err() {
                return Err(OvsdbError::Disconnected {
                    reason: "connection writer stopped".into(),
                });
            }
            match rx.await {
                Ok(r) => r,
                Err(_) => Err(OvsdbError::Disconnected {
                    reason: "connection task ended".into(),
                }),
            }
        };
        match tokio::time::timeout(after, exchange).await {
            Ok(r) => r,
            Err(_) => {
                self.inner.shared.lock().pending.remove(&id);
                warn!(target = %self.inner.target, method, ?after, "OVSDB request timed out");
                Err(OvsdbError::Timeout {
                    method: method.to_string(),
                    after,
                })
            }
        }
    }

    /// Sends JSON-RPC request `method` with `params` and returns its
    /// `result`; an error reply becomes [`OvsdbError::Rpc`].
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, OvsdbError> {
        self.request_timeout(method, params, self.inner.cfg.request_timeout)
            .await
    }

    /// Like [`OvsdbClient::request`] with an explicit deadline.
    pub async fn request_timeout(
        &self,
        method: &str,
        params: Value,
        after: Duration,
    ) -> Result<Value, OvsdbError> {
        let r = self.call(method, params, after).await?;
        if !r.error.is_null() {
            return Err(OvsdbError::Rpc {
                method: method.to_string(),
                error: r.error,
            });
        }
        Ok(r.result)
    }

    /// `echo`: a round trip to the server.
    pub async fn echo(&self) -> Result<(), OvsdbError> {
        let r = self.request("echo", json!(["shoal"])).await?;
        if r != json!(["shoal"]) {
            return Err(OvsdbError::BadReply {
                method: "echo".into(),
                why: format!("echo returned {r}"),
            });
        }
        Ok(())
    }

    /// `list_dbs`: the databases the server holds.
    pub async fn list_dbs(&self) -> Result<Vec<String>, OvsdbError> {
        let r = self.request("list_dbs", json!([])).await?;
        let bad = |why: &str| OvsdbError::BadReply {
            method: "list_dbs".into(),
            why: why.to_string(),
        };
        r.as_array()
            .ok_or_else(|| bad("result is not an array"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("database name is not a string"))
            })
            .collect()
    }

    /// `get_schema`: the schema of database `db`.
    pub async fn get_schema(&self, db: &str) -> Result<Value, OvsdbError> {
        self.request("get_schema", json!([db])).await
    }

    /// `transact`: runs `ops` (see [`op`]) atomically on database `db` and
    /// returns one result per operation. A JSON-RPC error reply, an
    /// operation's `{"error": ...}` result or a commit error all become
    /// [`OvsdbError::Transaction`].
    pub async fn transact(&self, db: &str, ops: Vec<Value>) -> Result<Vec<Value>, OvsdbError> {
        self.transact_timeout(db, ops, self.inner.cfg.request_timeout)
            .await
    }

    /// Like [`OvsdbClient::transact`] with an explicit deadline.
    pub async fn transact_timeout(
        &self,
        db: &str,
        ops: Vec<Value>,
        after: Duration,
    ) -> Result<Vec<Value>, OvsdbError> {
        let n_ops = ops.len();
        let mut params = Vec::with_capacity(n_ops + 1);
        params.push(Value::String(db.to_string()));
        params.extend(ops);
        let r = self.call("transact", Value::Array(params), after).await?;
        if !r.error.is_null() {
            let (error, details) = error_parts(&r.error);
            warn!(target = %self.inner.target, db, %error, ?details, "OVSDB transaction refused");
            return Err(OvsdbError::Transaction {
                index: None,
                error,
                details,
            });
        }
        let Value::Array(results) = r.result else {
            return Err(OvsdbError::BadReply {
                method: "transact".into(),
                why: "result is not an array".into(),
            });
        };
        for (i, res) in results.iter().enumerate() {
            if let Some(e) = res.get("error").filter(|e| !e.is_null()) {
                let (error, mut details) = error_parts(e);
                if details.is_none() {
                    // The usual shape: {"error": tag, "details": text}.
                    details = res
                        .get("details")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
                debug!(target = %self.inner.target, db, index = i, %error, ?details, "OVSDB operation failed");
                return Err(OvsdbError::Transaction {
                    index: Some(i),
                    error,
                    details,
                });
            }
        }
        if results.len() < n_ops {
            return Err(OvsdbError::BadReply {
                method: "transact".into(),
                why: format!("{} results for {n_ops} operations", results.len()),
            });
        }
        Ok(results)
    }

    /// Closes the connection: pending and later requests fail with
    /// [`OvsdbError::Disconnected`].
    pub async fn close(&self) {
        self.inner.shared.fail(OvsdbError::Disconnected {
            reason: "closed by the client".into(),
        });
        let tasks: Vec<JoinHandle<()>> = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

async fn writer_task(
    mut wr: BoxWrite,
    mut rx: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
    target: String,
) {
    while let Some(bytes) = rx.recv().await {
        if let Err(e) = wr.write_all(&bytes).await {
            warn!(%target, error = %e, "OVSDB write failed; closing the connection");
            shared.fail(OvsdbError::Disconnected {
                reason: format!("write failed: {e}"),
            });
            return;
        }
    }
    let _ = wr.shutdown().await;
}

async fn reader_task(
    mut rd: BoxRead,
    shared: Arc<Shared>,
    writer: mpsc::WeakSender<Vec<u8>>,
    notify: mpsc::Sender<Notification>,
    cap: usize,
    target: String,
) {
    let mut framer = JsonFramer::new(cap);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut dropped = 0u64;
    let err = 'conn: loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) => {
                break OvsdbError::Disconnected {
                    reason: "the server closed the connection".into(),
                }
            }
            Ok(n) => n,
            Err(e) => {
                break OvsdbError::Disconnected {
                    reason: format!("read failed: {e}"),
                }
            }
        };
        let mut values = Vec::new();
        let framed = framer.push(chunk.get(..n).unwrap_or_default(), &mut values);
        for v in values {
            if let Err(e) = dispatch(v, &shared, &writer, &notify, &target, &mut dropped) {
                break 'conn e;
            }
        }
        if let Err(e) = framed {
            break e;
        }
    };
    match &err {
        OvsdbError::Disconnected { reason } => debug!(%target, %reason, "OVSDB connection ended"),
        e => warn!(%target, error = %e, "OVSDB connection failed"),
    }
    shared.fail(err);
}

/// Handles one message from the server.
fn dispatch(
    v: Value,
    shared: &Shared,
    writer: &mpsc::WeakSender<Vec<u8>>,
    notify: &mpsc::Sender<Notification>,
    target: &str,
    dropped: &mut u64,
) -> Result<(), OvsdbError> {
    let Value::Object(mut msg) = v else {
        return Err(OvsdbError::Malformed {
            why: "a message that is not a JSON object".into(),
        });
    };
    let id = msg.remove("id").unwrap_or(Value::Null);
    if let Some(method) = msg.remove("method") {
        let Value::String(method) = method else {
            return Err(OvsdbError::Malformed {
                why: format!("method is not a string: {method}"),
            });
        };
        let params = msg.remove("params").unwrap_or_else(|| json!([]));
        if id.is_null() {
            let n = Notification { method, params };
            if let Err(mpsc::error::TrySendError::Full(n)) = notify.try_send(n) {
                *dropped = dropped.saturating_add(1);
                // Warn on drops 1, 2, 4, 8, ...: not once per message.
                if dropped.is_power_of_two() {
                    warn!(%target, method = %n.method, dropped = *dropped,
                        "OVSDB notifications dropped: channel full (nobody reads them?)");
                }
            }
            return Ok(());
        }
        let reply = if method == "echo" {
            json!({"id": id, "result": params, "error": null})
        } else {
            debug!(%target, %method, "OVSDB server request with unknown method");
            json!({"id": id, "result": null, "error": {"error": "unknown method", "details": method}})
        };
        let bytes = serde_json::to_vec(&reply).map_err(|e| OvsdbError::Encode(e.to_string()))?;
        match writer.upgrade() {
            Some(tx) => {
                if tx.try_send(bytes).is_err() {
                    warn!(%target, "OVSDB reply to a server request dropped: writer busy");
                }
            }
            None => debug!(%target, "OVSDB client dropped; server request unanswered"),
        }
        return Ok(());
    }
    if !msg.contains_key("result") && !msg.contains_key("error") {
        return Err(OvsdbError::Malformed {
            why: "a message that is neither a request nor a reply".into(),
        });
    }
    let Some(id) = id.as_u64() else {
        warn!(%target, %id, "OVSDB reply with an id we never sent; ignored");
        return Ok(());
    };
    let Some(tx) = shared.lock().pending.remove(&id) else {
        debug!(%target, id, "OVSDB reply to no pending request (late?); ignored");
        return Ok(());
    };
    let resp = Response {
        result: msg.remove("result").unwrap_or(Value::Null),
        error: msg.remove("error").unwrap_or(Value::Null),
    };
    let _ = tx.send(Ok(resp));
    Ok(())
}

/// Builders of `transact` operations (RFC 7047 §5.2).
pub mod op {
    use serde_json::{json, Map, Value};

    /// A condition function.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Function {
        /// `<`
        Lt,
        /// `<=`
        Le,
        /// `==`
        Eq,
        /// `!=`
        Ne,
        /// `>=`
        Ge,
        /// `>`
        Gt,
        /// `includes`
        Includes,
        /// `excludes`
        Excludes,
    }

    impl Function {
        /// The wire name.
        pub fn as_str(self) -> &'static str {
            match self {
                Function::Lt => "<",
                Function::Le => "<=",
                Function::Eq => "==",
                Function::Ne => "!=",
                Function::Ge => ">=",
                Function::Gt => ">",
                Function::Includes => "includes",
                Function::Excludes => "excludes",
            }
        }
    }

    /// A mutator of `mutate`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Mutator {
        /// `+=`
        Add,
        /// `-=`
        Sub,
        /// `*=`
        Mul,
        /// `/=`
        Div,
        /// `%=`
        Mod,
        /// `insert` (sets and maps)
        Insert,
        /// `delete` (sets and maps)
        Delete,
    }

    impl Mutator {
        /// The wire name.
        pub fn as_str(self) -> &'static str {
            match self {
                Mutator::Add => "+=",
                Mutator::Sub => "-=",
                Mutator::Mul => "*=",
                Mutator::Div => "/=",
                Mutator::Mod => "%=",
                Mutator::Insert => "insert",
                Mutator::Delete => "delete",
            }
        }
    }

    /// The `until` of a `wait`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Until {
        /// Wait until the selected rows equal the given rows.
        Eq,
        /// Wait until they differ.
        Ne,
    }

    /// `[column, function, value]`.
    pub fn cond(column: &str, function: Function, value: Value) -> Value {
        json!([column, function.as_str(), value])
    }

    /// `[column, mutator, value]`.
    pub fn mutation(column: &str, mutator: Mutator, value: Value) -> Value {
        json!([column, mutator.as_str(), value])
    }

    /// `["uuid", u]`.
    pub fn uuid(u: &str) -> Value {
        json!(["uuid", u])
    }

    /// `["named-uuid", name]`: a row inserted earlier in the same
    /// transaction (`name` must match `[_a-zA-Z][_a-zA-Z0-9]*`).
    pub fn named_uuid(name: &str) -> Value {
        json!(["named-uuid", name])
    }

    /// `["set", items]`.
    pub fn set(items: Vec<Value>) -> Value {
        json!(["set", items])
    }

    /// `["map", [[k, v], ...]]`.
    pub fn map(pairs: Vec<(Value, Value)>) -> Value {
        let pairs: Vec<Value> = pairs.into_iter().map(|(k, v)| json!([k, v])).collect();
        json!(["map", pairs])
    }

    /// A string-to-string map.
    pub fn str_map<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> Value {
        map(pairs
            .into_iter()
            .map(|(k, v)| (json!(k.as_ref()), json!(v.as_ref())))
            .collect())
    }

    /// `insert` of `row` into `table`, optionally naming the new row for
    /// [`named_uuid`] references later in the transaction.
    pub fn insert(table: &str, row: Value, uuid_name: Option<&str>) -> Value {
        let mut o = Map::new();
        o.insert("op".into(), json!("insert"));
        o.insert("table".into(), json!(table));
        o.insert("row".into(), row);
        if let Some(n) = uuid_name {
            o.insert("uuid-name".into(), json!(n));
        }
        Value::Object(o)
    }

    /// `update` of the rows of `table` matching `conds` with `row`.
    pub fn update(table: &str, conds: Vec<Value>, row: Value) -> Value {
        json!({"op": "update", "table": table, "where": conds, "row": row})
    }

    /// `delete` of the rows of `table` matching `conds`.
    pub fn delete(table: &str, conds: Vec<Value>) -> Value {
        json!({"op": "delete", "table": table, "where": conds})
    }

    /// `select` of the rows of `table` matching `conds` (all columns when
    /// `columns` is `None`).
    pub fn select(table: &str, conds: Vec<Value>, columns: Option<&[&str]>) -> Value {
        let mut o = Map::new();
        o.insert("op".into(), json!("select"));
        o.insert("table".into(), json!(table));
        o.insert("where".into(), Value::Array(conds));
        if let Some(c) = columns {
            o.insert("columns".into(), json!(c));
        }
        Value::Object(o)
    }

    /// `mutate` of the rows of `table` matching `conds`.
    pub fn mutate(table: &str, conds: Vec<Value>, mutations: Vec<Value>) -> Value {
        json!({"op": "mutate", "table": table, "where": conds, "mutations": mutations})
    }

    /// `wait` until the `columns` of the rows of `table` matching `conds`
    /// are (or are not) exactly `rows`; `timeout_ms` `Some(0)` fails at
    /// once, `None` waits indefinitely on the server (bounded by the
    /// request's own deadline).
    pub fn wait(
        table: &str,
        conds: Vec<Value>,
        columns: &[&str],
        until: Until,
        rows: Vec<Value>,
        timeout_ms: Option<u64>,
    ) -> Value {
        let mut o = Map::new();
        o.insert("op".into(), json!("wait"));
        o.insert("table".into(), json!(table));
        o.insert("where".into(), Value::Array(conds));
        o.insert("columns".into(), json!(columns));
        o.insert(
            "until".into(),
            json!(match until {
                Until::Eq => "==",
                Until::Ne => "!=",
            }),
        );
        o.insert("rows".into(), Value::Array(rows));
        if let Some(t) = timeout_ms {
            o.insert("timeout".into(), json!(t));
        }
        Value::Object(o)
    }

    /// `comment`: written to the database log with the transaction.
    pub fn comment(text: &str) -> Value {
        json!({"op": "comment", "comment": text})
    }
}

/// Readers of OVSDB values in results (RFC 7047 §5.1). They never panic;
/// `None` means the value does not have the expected shape.
pub mod datum {
    use std::collections::BTreeMap;

    use serde_json::Value;

    /// The UUID string of `["uuid", "..."]`.
    pub fn uuid(v: &Value) -> Option<&str> {
        match v.as_array()?.as_slice() {
            [Value::String(tag), Value::String(u)] if tag == "uuid" => Some(u),
            _ => None,
        }
    }

    /// The members of a set: `["set", [...]]`, or a single atom (a set of
    /// one is sent as the bare atom).
    pub fn set(v: &Value) -> Option<Vec<&Value>> {
        if let Some([Value::String(tag), Value::Array(items)]) = v.as_array().map(Vec::as_slice) {
            if tag == "set" {
                return Some(items.iter().collect());
            }
        }
        match v {
            Value::Array(a) if a.first().and_then(Value::as_str) == Some("map") => None,
            _ => Some(vec![v]),
        }
    }

    /// The pairs of `["map", [[k, v], ...]]`.
    pub fn map(v: &Value) -> Option<Vec<(&Value, &Value)>> {
        let [Value::String(tag), Value::Array(pairs)] = v.as_array()?.as_slice() else {
            return None;
        };
        if tag != "map" {
            return None;
        }
        pairs
            .iter()
            .map(|p| match p.as_array().map(Vec::as_slice) {
                Some([k, v]) => Some((k, v)),
                _ => None,
            })
            .collect()
    }

    /// A string-to-string map (e.g. `external_ids`).
    pub fn str_map(v: &Value) -> Option<BTreeMap<String, String>> {
        map(v)?
            .into_iter()
            .map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
            .collect()
    }

    /// The UUID of the row an `insert` created.
    pub fn inserted_uuid(result: &Value) -> Option<&str> {
        uuid(result.get("uuid")?)
    }

    /// The `count` of an `update`, `mutate` or `delete` result.
    pub fn count(result: &Value) -> Option<u64> {
        result.get("count")?.as_u64()
    }

    /// The `rows` of a `select` result.
    pub fn rows(result: &Value) -> Option<&[Value]> {
        result.get("rows")?.as_array().map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    //! Protocol robustness against a scripted unix-socket server.

    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::AtomicUsize;
    use tokio::net::{UnixListener, UnixStream};

    static SOCK: AtomicUsize = AtomicUsize::new(0);

    fn sock_path() -> PathBuf {
        let n = SOCK.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!("sdb-ovsdb-{}-{n}.sock", std::process::id()))
    }

    /// The server side of one scripted connection.
    struct Peer {
        s: UnixStream,
        framer: JsonFramer,
        queue: VecDeque<Value>,
    }

    impl Peer {
        async fn recv(&mut self) -> Option<Value> {
            let mut buf = [0u8; 4096];
            loop {
                if let Some(v) = self.queue.pop_front() {
                    return Some(v);
                }
                let n = self.s.read(&mut buf).await.ok()?;
                if n == 0 {
                    return None;
                }
                let mut got = Vec::new();
                self.framer.push(&buf[..n], &mut got).ok()?;
                self.queue.extend(got);
            }
        }
        async fn send_raw(&mut self, b: &[u8]) {
            self.s.write_all(b).await.unwrap();
        }
        async fn send(&mut self, v: Value) {
            self.send_raw(v.to_string().as_bytes()).await;
        }
        /// Reads a request and checks its method; returns its id and params.
        async fn expect(&mut self, method: &str) -> (Value, Value) {
            let r = self.recv().await.expect("a request");
            assert_eq!(r["method"], method, "{r}");
            (r["id"].clone(), r["params"].clone())
        }
    }

    /// Starts a one-connection server running `script`, and a client with
    /// a `timeout` request deadline.
    async fn scripted<F, Fut>(timeout: Duration, script: F) -> (OvsdbClient, JoinHandle<()>)
    where
        F: FnOnce(Peer) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let path = sock_path();
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            script(Peer {
                s,
                framer: JsonFramer::new(1 << 20),
                queue: VecDeque::new(),
            })
            .await;
        });
        let cfg = OvsdbConfig {
            request_timeout: timeout,
            max_message_bytes: 4096,
            ..OvsdbConfig::default()
        };
        let c = OvsdbClient::connect_with(&OvsdbTarget::Unix(path.clone()), cfg)
            .await
            .unwrap();
        let _ = std::fs::remove_file(&path);
        (c, server)
    }

    /// Guards against a hang: every client call in these tests must end.
    async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .expect("the client hung")
    }

    fn frame(f: &mut JsonFramer, bytes: &[u8]) -> Result<Vec<Value>, OvsdbError> {
        let mut out = Vec::new();
        f.push(bytes, &mut out).map(|()| out)
    }

    #[test]
    fn framer_any_split_gives_the_same_values() {
        let text = br#"{"id":1,"result":["a}{\"]",{"x":[1,2,{}]}],"error":null} {"id":null,"method":"update","params":[null,{}]}
{"s":"\\"}"#;
        let whole = frame(&mut JsonFramer::new(1 << 20), text).unwrap();
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0]["result"][0], "a}{\"]");
        assert_eq!(whole[2]["s"], "\\");
        for cut in 0..=text.len() {
            let mut f = JsonFramer::new(1 << 20);
            let mut got = frame(&mut f, &text[..cut]).unwrap();
            got.extend(frame(&mut f, &text[cut..]).unwrap());
            assert_eq!(got, whole, "split at {cut}");
            assert_eq!(f.buffered(), 0);
        }
        let mut f = JsonFramer::new(1 << 20);
        let mut got = Vec::new();
        for b in text.iter() {
            got.extend(frame(&mut f, std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(got, whole, "byte by byte");
    }

    #[test]
    fn framer_rejects_what_is_not_a_json_object() {
        for bad in [
            &b"hello"[..],
            b"[1,2]",
            b"42 ",
            b"\"str\"",
            b"{\"a\":1]",
            b"{\"a\": tru}",
            b"{\"a\":\"\xff\xfe\"}",
            b"{\"id\":1} }",
            b"{\"a\":1,}",
        ] {
            let r = frame(&mut JsonFramer::new(1 << 20), bad);
            assert!(
                matches!(r, Err(OvsdbError::Malformed { .. })),
                "{:?} gave {r:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Deep nesting is an error, not a stack overflow.
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            frame(&mut JsonFramer::new(1 << 20), deep.as_bytes()),
            Err(OvsdbError::Malformed { .. })
        ));
        // Values before the garbage are delivered; the framer stays failed.
        let mut f = JsonFramer::new(1 << 20);
        let mut out = Vec::new();
        assert!(f.push(b"{\"a\":1}{\"b\":2} x{\"c\":3}", &mut out).is_err());
        assert_eq!(out, vec![json!({"a": 1}), json!({"b": 2})]);
        assert!(frame(&mut f, b"{}").is_err());
    }

    #[test]
    fn framer_caps_partial_and_complete_values() {
        let mut f = JsonFramer::new(64);
        assert!(frame(&mut f, b"{\"a\":\"").unwrap().is_empty());
        assert!(matches!(
            frame(&mut f, &[b'x'; 100]),
            Err(OvsdbError::TooLarge { limit: 64 })
        ));
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(100));
        assert!(matches!(
            frame(&mut JsonFramer::new(64), big.as_bytes()),
            Err(OvsdbError::TooLarge { limit: 64 })
        ));
        // Exactly at the cap is fine, whitespace between values is not counted.
        let fits = format!("{{\"a\":\"{}\"}}", "x".repeat(64 - 8));
        assert_eq!(fits.len(), 64);
        let mut f = JsonFramer::new(64);
        for _ in 0..3 {
            assert_eq!(frame(&mut f, fits.as_bytes()).unwrap().len(), 1);
            assert!(frame(&mut f, &[b' '; 100]).unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn split_and_concatenated_replies_and_notifications() {
        let (c, server) = scripted(Duration::from_secs(5), |mut p| async move {
            let (a, _) = p.expect("list_dbs").await;
            let (b, _) = p.expect("echo").await;
            // The reply to the second request first, concatenated with a
            // notification, then the first reply one byte at a time.
            let two = format!(
                r#"{{"id":{b},"result":["shoal"],"error":null}}{{"id":null,"method":"update","params":["mon",{{"Bridge":{{}}}}]}}"#
            );
            p.send_raw(two.as_bytes()).await;
            let one = format!(r#"{{"id":{a},"result":["Open_vSwitch","_Server"],"error":null}}"#);
            for byte in one.as_bytes() {
                p.send_raw(std::slice::from_ref(byte)).await;
                tokio::task::yield_now().await;
            }
            let _ = p.recv().await;
        })
        .await;
        let mut notes = c.take_notifications().unwrap();
        assert!(c.take_notifications().is_none());
        let (dbs, echo) = bounded(async { tokio::join!(c.list_dbs(), c.echo()) }).await;
        assert_eq!(dbs.unwrap(), vec!["Open_vSwitch", "_Server"]);
        echo.unwrap();
        let n = bounded(notes.recv()).await.unwrap();
        assert_eq!(n.method, "update");
        assert_eq!(n.params[0], "mon");
        c.close().await;
        server.await.unwrap();
    }

    #[tokio::test]
    async fn server_echo_is_answered() {
        let (c, server) = scripted(Duration::from_secs(5), |mut p| async move {
            p.send(json!({"id": "echo", "method": "echo", "params": [1, "x"]}))
                .await;
            p.send(json!({"id": 7, "method": "frobnicate", "params": []}))
                .await;
            // The client's request may come before or after its answers.
            let (mut echo, mut unknown, mut request) = (None, None, None);
            while echo.is_none() || unknown.is_none() || request.is_none() {
                let m = p.recv().await.expect("a message");
                if m.get("method").is_some() {
                    request = Some(m);
                } else if m["id"] == "echo" {
                    echo = Some(m);
                } else {
                    unknown = Some(m);
                }
            }
            assert_eq!(
                echo.unwrap(),
                json!({"id": "echo", "result": [1, "x"], "error": null})
            );
            // An unknown server request gets an error, not silence.
            let unknown = unknown.unwrap();
            assert_eq!(unknown["id"], 7);
            assert_eq!(unknown["error"]["error"], "unknown method");
            let request = request.unwrap();
            assert_eq!(request["method"], "list_dbs");
            p.send(json!({"id": request["id"], "result": [], "error": null}))
                .await;
        })
        .await;
        // The client must have answered both before the server replies.
        assert!(bounded(c.list_dbs()).await.unwrap().is_empty());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn rpc_error_and_per_operation_errors_are_typed() {
        let (c, server) = scripted(Duration::from_secs(5), |mut p| async move {
            let (id, params) = p.expect("transact").await;
            assert_eq!(params[0], "Nope");
            p.send(json!({"id": id, "result": null,
                "error": {"error": "unknown database", "details": "Nope is not a database"}}))
                .await;
            let (id, params) = p.expect("transact").await;
            assert_eq!(params.as_array().unwrap().len(), 3);
            p.send(json!({"id": id, "error": null, "result": [
                {"uuid": ["uuid", "2ae2042f-4185-40e3-81d1-abe48bd336f3"]},
                {"error": "constraint violation", "details": "port name too long"}
            ]}))
            .await;
            let (id, _) = p.expect("transact").await;
            p.send(json!({"id": id, "error": null, "result": [
                {"uuid": ["uuid", "2ae2042f-4185-40e3-81d1-abe48bd336f3"]},
                {"error": "referential integrity violation", "details": "dangling"}
            ]}))
            .await;
            let (id, _) = p.expect("transact").await;
            p.send(json!({"id": id, "error": null, "result": [{"count": 1}]}))
                .await;
            let (id, _) = p.expect("transact").await;
            p.send(json!({"id": id, "error": null, "result": {"count": 1}}))
                .await;
            let (id, _) = p.expect("get_schema").await;
            p.send(json!({"id": id, "error": "no schema", "result": null}))
                .await;
        })
        .await;
        let e = bounded(c.transact("Nope", vec![op::comment("x")]))
            .await
            .unwrap_err();
        match &e {
            OvsdbError::Transaction {
                index: None,
                error,
                details,
            } => {
                assert_eq!(error, "unknown database");
                assert_eq!(details.as_deref(), Some("Nope is not a database"));
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("unknown database"));
        let ops = vec![
            op::insert("QoS", json!({"type": "linux-htb"}), Some("q")),
            op::insert("Port", json!({}), None),
        ];
        match bounded(c.transact("Open_vSwitch", ops.clone())).await {
            Err(OvsdbError::Transaction {
                index: Some(1),
                error,
                details,
            }) => {
                assert_eq!(error, "constraint violation");
                assert_eq!(details.as_deref(), Some("port name too long"));
            }
            other => panic!("{other:?}"),
        }
        match bounded(c.transact("Open_vSwitch", vec![ops[0].clone()])).await {
            Err(OvsdbError::Transaction {
                index: Some(1),
                error,
                ..
            }) => assert_eq!(error, "referential integrity violation"),
            other => panic!("{other:?}"),
        }
        // Fewer results than operations, a result that is no array.
        assert!(matches!(
            bounded(c.transact("Open_vSwitch", ops.clone())).await,
            Err(OvsdbError::BadReply { .. })
        ));
        assert!(matches!(
            bounded(c.transact("Open_vSwitch", ops)).await,
            Err(OvsdbError::BadReply { .. })
        ));
        assert!(matches!(
            bounded(c.get_schema("Open_vSwitch")).await,
            Err(OvsdbError::Rpc { .. })
        ));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn garbage_fails_the_connection_fast() {
        let (c, server) = scripted(Duration::from_secs(30), |mut p| async move {
            let _ = p.expect("list_dbs").await;
            p.send_raw(b"{\"id\":1,\"result\":[]}\x00garbage").await;
            // Hold the socket open: the client must not wait for a close.
            tokio::time::sleep(Duration::from_secs(3)).await;
        })
        .await;
        // The first reply was valid and arrived before the garbage.
        let started = std::time::Instant::now();
        assert!(bounded(c.list_dbs()).await.unwrap().is_empty());
        let e = bounded(c.list_dbs()).await.unwrap_err();
        assert!(
            matches!(e, OvsdbError::Disconnected { ref reason } if reason.contains("malformed")),
            "{e:?}"
        );
        assert!(c.is_closed());
        assert!(started.elapsed() < Duration::from_secs(2));
        server.abort();
    }

    #[tokio::test]
    async fn garbage_fails_pending_requests_with_the_reason() {
        let (c, server) = scripted(Duration::from_secs(30), |mut p| async move {
            let _ = p.expect("list_dbs").await;
            p.send_raw(b"{\"id\":1,\"result\":[\"a\" \"b\"]}").await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        })
        .await;
        let e = bounded(c.list_dbs()).await.unwrap_err();
        assert!(matches!(e, OvsdbError::Malformed { .. }), "{e:?}");
        server.abort();
    }

    #[tokio::test]
    async fn a_non_object_message_fails_the_connection() {
        let (c, server) = scripted(Duration::from_secs(30), |mut p| async move {
            let _ = p.expect("list_dbs").await;
            p.send_raw(b"{\"method\": 3, \"id\": null}").await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        })
        .await;
        let e = bounded(c.list_dbs()).await.unwrap_err();
        assert!(matches!(e, OvsdbError::Malformed { .. }), "{e:?}");
        server.abort();
    }

    #[tokio::test]
    async fn oversized_message_fails_the_connection() {
        let (c, server) = scripted(Duration::from_secs(30), |mut p| async move {
            let (id, _) = p.expect("list_dbs").await;
            let big = "x".repeat(10_000);
            p.send(json!({"id": id, "result": [big], "error": null}))
                .await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        })
        .await;
        let e = bounded(c.list_dbs()).await.unwrap_err();
        assert!(matches!(e, OvsdbError::TooLarge { limit: 4096 }), "{e:?}");
        server.abort();
    }

    #[tokio::test]
    async fn server_close_fails_pending_and_later_requests() {
        let (c, server) = scripted(Duration::from_secs(30), |mut p| async move {
            let _ = p.expect("transact").await;
            // Half a reply, then close.
            p.send_raw(b"{\"id\":1,\"res").await;
        })
        .await;
        let started = std::time::Instant::now();
        let e = bounded(c.transact("Open_vSwitch", vec![]))
            .await
            .unwrap_err();
        assert!(matches!(e, OvsdbError::Disconnected { .. }), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(matches!(
            bounded(c.echo()).await,
            Err(OvsdbError::Disconnected { .. })
        ));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn silent_server_times_out_and_a_late_reply_is_ignored() {
        let (c, server) = scripted(Duration::from_millis(300), |mut p| async move {
            let (late, _) = p.expect("list_dbs").await;
            let (id, _) = p.expect("list_dbs").await;
            // The first reply arrives after its deadline, then the second.
            p.send(json!({"id": late, "result": ["late"], "error": null}))
                .await;
            p.send(json!({"id": id, "result": ["ok"], "error": null}))
                .await;
            // A reply to an id never sent, and one with a string id.
            p.send(json!({"id": 999, "result": [], "error": null}))
                .await;
            p.send(json!({"id": "x", "result": [], "error": null}))
                .await;
            let (id, _) = p.expect("list_dbs").await;
            p.send(json!({"id": id, "result": ["still fine"], "error": null}))
                .await;
            let _ = p.recv().await;
        })
        .await;
        let started = std::time::Instant::now();
        match bounded(c.list_dbs()).await {
            Err(OvsdbError::Timeout { method, after }) => {
                assert_eq!(method, "list_dbs");
                assert_eq!(after, Duration::from_millis(300));
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(bounded(c.list_dbs()).await.unwrap(), vec!["ok"]);
        assert_eq!(bounded(c.list_dbs()).await.unwrap(), vec!["still fine"]);
        assert!(!c.is_closed());
        c.close().await;
        assert!(c.is_closed());
        assert!(matches!(
            bounded(c.list_dbs()).await,
            Err(OvsdbError::Disconnected { .. })
        ));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn tcp_target_and_a_notification_flood() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            // 5000 notifications nobody reads, in one burst, then a reply.
            let mut burst = Vec::new();
            for i in 0..5000 {
                burst.extend(
                    json!({"id": null, "method": "update", "params": [i]})
                        .to_string()
                        .bytes(),
                );
            }
            let mut f = JsonFramer::new(1 << 20);
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while got.is_empty() {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                f.push(&buf[..n], &mut got).unwrap();
            }
            s.write_all(&burst).await.unwrap();
            let reply = json!({"id": got[0]["id"], "result": ["Open_vSwitch"], "error": null});
            s.write_all(reply.to_string().as_bytes()).await.unwrap();
            let _ = s.read(&mut buf).await;
        });
        let c = OvsdbClient::connect(&format!("tcp:127.0.0.1:{port}"))
            .await
            .unwrap();
        assert_eq!(
            c.target(),
            &OvsdbTarget::Tcp {
                host: "127.0.0.1".into(),
                port
            }
        );
        assert_eq!(bounded(c.list_dbs()).await.unwrap(), vec!["Open_vSwitch"]);
        // The channel kept the first notifications, the rest were dropped.
        let mut notes = c.take_notifications().unwrap();
        let first = notes.try_recv().unwrap();
        assert_eq!(first.params, json!([0]));
        assert!(!c.is_closed());
        c.close().await;
        server.await.unwrap();
    }

    #[tokio::test]
    async fn connect_errors_are_values() {
        let missing = sock_path();
        let e = OvsdbClient::connect(&format!("unix:{}", missing.display()))
            .await
            .unwrap_err();
        assert!(matches!(e, OvsdbError::Connect { .. }), "{e:?}");
        for bad in [
            "",
            "unix:",
            "tcp:host",
            "tcp::1",
            "tcp:h:0",
            "tcp:h:99999",
            "ssl:h:1",
        ] {
            assert!(
                matches!(
                    OvsdbClient::connect(bad).await,
                    Err(OvsdbError::BadTarget { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            OvsdbTarget::parse("tcp:[::1]:6640").unwrap(),
            OvsdbTarget::Tcp {
                host: "::1".into(),
                port: 6640
            }
        );
        for t in [DEFAULT_TARGET, "tcp:127.0.0.1:6640", "tcp:[::1]:6640"] {
            assert_eq!(OvsdbTarget::parse(t).unwrap().to_string(), t);
        }
    }

    #[test]
    fn operations_have_the_rfc_shape() {
        let ops = vec![
            op::wait(
                "Port",
                vec![op::cond("name", op::Function::Eq, json!("p1"))],
                &["qos"],
                op::Until::Eq,
                vec![json!({"qos": op::set(vec![])})],
                Some(0),
            ),
            op::insert(
                "Queue",
                json!({"other_config": op::str_map([("max-rate", "1")])}),
                Some("q"),
            ),
            op::update("Port", vec![], json!({"qos": op::named_uuid("q")})),
            op::mutate(
                "Open_vSwitch",
                vec![],
                vec![op::mutation("next_cfg", op::Mutator::Add, json!(1))],
            ),
            op::select("QoS", vec![], Some(&["_uuid"])),
            op::delete(
                "QoS",
                vec![op::cond("_uuid", op::Function::Eq, op::uuid("u"))],
            ),
            op::comment("hi"),
        ];
        assert_eq!(
            Value::Array(ops),
            json!([
                {"op": "wait", "table": "Port", "where": [["name", "==", "p1"]],
                 "columns": ["qos"], "until": "==", "rows": [{"qos": ["set", []]}], "timeout": 0},
                {"op": "insert", "table": "Queue", "uuid-name": "q",
                 "row": {"other_config": ["map", [["max-rate", "1"]]]}},
                {"op": "update", "table": "Port", "where": [], "row": {"qos": ["named-uuid", "q"]}},
                {"op": "mutate", "table": "Open_vSwitch", "where": [],
                 "mutations": [["next_cfg", "+=", 1]]},
                {"op": "select", "table": "QoS", "where": [], "columns": ["_uuid"]},
                {"op": "delete", "table": "QoS", "where": [["_uuid", "==", ["uuid", "u"]]]},
                {"op": "comment", "comment": "hi"}
            ])
        );
    }

    #[test]
    fn datum_readers_never_panic() {
        assert_eq!(datum::uuid(&json!(["uuid", "a"])), Some("a"));
        assert_eq!(datum::uuid(&json!(["named-uuid", "a"])), None);
        assert_eq!(datum::uuid(&json!({"uuid": 1})), None);
        assert_eq!(datum::set(&json!(["set", [1, 2]])).unwrap().len(), 2);
        assert_eq!(datum::set(&json!(["uuid", "a"])).unwrap().len(), 1);
        assert_eq!(datum::set(&json!(["map", []])), None);
        let m = datum::str_map(&json!(["map", [["k", "v"], ["a", "b"]]])).unwrap();
        assert_eq!(m.get("k").map(String::as_str), Some("v"));
        for bad in [
            json!(null),
            json!([]),
            json!(["map"]),
            json!(["map", [["k"]]]),
            json!(["map", [[1, "v"]]]),
            json!(["set", []]),
        ] {
            assert_eq!(datum::str_map(&bad), None, "{bad}");
        }
        assert_eq!(datum::count(&json!({"count": 3})), Some(3));
        assert_eq!(datum::count(&json!({"count": -3})), None);
        assert_eq!(datum::rows(&json!({"rows": 1})), None);
        assert_eq!(
            datum::inserted_uuid(&json!({"uuid": ["uuid", "x"]})),
            Some("x")
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                "[ -~{}\\[\\]\"\\\\é\\n]{0,12}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 32, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map("[a-z{}\"]{0,4}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn arbitrary_chunks_never_panic(
                chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8)
            ) {
                let mut f = JsonFramer::new(256);
                let mut out = Vec::new();
                for c in &chunks {
                    if f.push(c, &mut out).is_err() {
                        break;
                    }
                }
            }

            #[test]
            fn objects_survive_any_chunking(
                objs in prop::collection::vec(
                    prop::collection::btree_map("[a-z]{1,3}", json_value(), 0..4), 1..5),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            ) {
                let objs: Vec<Value> =
                    objs.into_iter().map(|m| Value::Object(m.into_iter().collect())).collect();
                let mut text = Vec::new();
                for o in &objs {
                    text.extend(serde_json::to_vec(o).unwrap());
                    text.extend(b" \n");
                }
                let mut points: Vec<usize> = cuts.iter().map(|c| c.index(text.len() + 1)).collect();
                points.push(0);
                points.push(text.len());
                points.sort();
                let mut f = JsonFramer::new(1 << 20);
                let mut out = Vec::new();
                for w in points.windows(2) {
                    f.push(&text[w[0]..w[1]], &mut out).unwrap();
                }
                prop_assert_eq!(out, objs);
                prop_assert_eq!(f.buffered(), 0);
            }
        }
    }
}
