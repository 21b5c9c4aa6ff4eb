//! Switch connections: a tokio listener, one task per switch.
//!
//! Each connection negotiates OpenFlow 1.3 (other versions are refused with
//! `OFPET_HELLO_FAILED` and a log line), learns the datapath id from
//! FEATURES, then runs a reader loop that
//! - answers ECHO_REQUESTs and sends its own when the peer is quiet, closing
//!   the connection when the peer stays silent for three echo intervals;
//! - matches replies to requests by xid (multipart replies are collected
//!   until the MORE flag clears, under a size cap), failing a request on an
//!   ERROR with its xid or when its deadline passes;
//! - turns asynchronous messages (PACKET_IN, PORT_STATUS, FLOW_REMOVED,
//!   unsolicited ERROR) into [`SwitchEvent`]s.
//!
//! No peer can stall the controller (docs/openflow.md):
//! - writes go through a separate writer task fed by a queue bounded in
//!   bytes ([`ConnConfig::send_queue_bytes`]); the reader loop and the
//!   [`SwitchHandle`]s only ever `try_send`, so neither waits for a peer;
//! - a peer whose queue is full, or a socket write that does not complete
//!   within [`ConnConfig::write_timeout`], ends the connection with the log
//!   line `switch <dpid> not reading: disconnected`; its pending requests
//!   fail with [`OfError::NotReading`];
//! - asynchronous messages go to the core with `try_send` on a bounded
//!   channel (a full channel drops the event and counts it), while the
//!   connect and disconnect events, at most two per connection, go on a
//!   separate unbounded channel and are never lost;
//! - a switch outside [`ConnConfig::allowed_dpids`] is refused after
//!   FEATURES.
//!
//! Framing is check-then-parse (`ofp::check_frame`): a partial
//! message waits for more bytes, an impossible length closes the connection,
//! and a message that fails to decode is logged and answered with an ERROR
//! while the connection goes on.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use ofp::{
    ErrorKind, ErrorMsg, FlowRemoved, Hello, Message, MultipartReply, MultipartRequest, OfpMessage,
    PacketIn, PortDesc, PortStatus, SwitchFeatures, OFP_VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::monitor::fair::{ConnSender, FairQueues};
use crate::monitor::stats::Monitor;

/// OpenFlow message type numbers used by the framing layer.
mod ty {
    pub const HELLO: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const MULTIPART_REPLY: u8 = 19;
}
/// `OFPMPF_REPLY_MORE`.
const MPF_MORE: u16 = 1;

/// Commands (sends and requests) queued per connection between the
/// [`SwitchHandle`]s and the connection's reader loop.
pub const COMMAND_QUEUE: usize = 1024;
/// Droppable events queued to the forwarding core at most, all switches
/// together.
pub const EVENT_QUEUE: usize = 8192;
/// Droppable events queued to the forwarding core at most per connection
/// (the core serves the connections in turn, see [`crate::monitor::fair`]).
pub const CONN_EVENT_QUEUE: usize = 1024;

/// Errors of a switch connection or request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OfError {
    /// The connection is gone.
    #[error("switch {dpid:016x} is disconnected")]
    Disconnected {
        /// Datapath id.
        dpid: u64,
    },
    /// No reply before the deadline.
    #[error("request to switch {dpid:016x} timed out after {after:?}")]
    Timeout {
        /// Datapath id.
        dpid: u64,
        /// The timeout.
        after: Duration,
    },
    /// The switch answered with an ERROR.
    #[error("switch {dpid:016x} rejected the request: {error:?}")]
    Rejected {
        /// Datapath id.
        dpid: u64,
        /// Its ERROR.
        error: ErrorMsg,
    },
    /// A reply did not decode or did not fit the request.
    #[error("bad reply from switch {dpid:016x}: {why}")]
    BadReply {
        /// Datapath id.
        dpid: u64,
        /// What was wrong.
        why: String,
    },
    /// A message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The switch does not read what it is sent: its queue is full (or a
    /// write timed out) and the connection is being closed.
    #[error("switch {dpid:016x} is not reading: disconnected")]
    NotReading {
        /// Datapath id.
        dpid: u64,
    },
}

/// Something a switch did that the rest of the controller reacts to.
#[derive(Debug)]
pub enum SwitchEvent {
    /// Handshake complete.
    Connected {
        /// Datapath id.
        dpid: u64,
        /// Connection id (unique per connection).
        conn_id: u64,
        /// The switch's address.
        peer: SocketAddr,
        /// FEATURES_REPLY.
        features: SwitchFeatures,
        /// PORT_DESC.
        ports: Vec<PortDesc>,
        /// DESC (manufacturer, software), when it answered.
        description: Option<String>,
        /// Handle to talk to it.
        handle: SwitchHandle,
    },
    /// The connection ended.
    Disconnected {
        /// Datapath id.
        dpid: u64,
        /// Connection id.
        conn_id: u64,
        /// Why.
        reason: String,
    },
    /// A PACKET_IN.
    PacketIn {
        /// Datapath id.
        dpid: u64,
        /// Connection id.
        conn_id: u64,
        /// The message.
        msg: PacketIn,
    },
    /// A PORT_STATUS.
    PortStatus {
        /// Datapath id.
        dpid: u64,
        /// Connection id.
        conn_id: u64,
        /// The message.
        msg: PortStatus,
    },
    /// A FLOW_REMOVED (already added to the monitor by the connection).
    FlowRemoved {
        /// Datapath id.
        dpid: u64,
        /// The message.
        msg: FlowRemoved,
    },
    /// An ERROR that answered no pending request.
    Error {
        /// Datapath id.
        dpid: u64,
        /// Its xid.
        xid: u32,
        /// The error.
        msg: ErrorMsg,
    },
}

impl SwitchEvent {
    /// The event's name, for logs.
    fn kind(&self) -> &'static str {
        match self {
            SwitchEvent::Connected { .. } => "connected",
            SwitchEvent::Disconnected { .. } => "disconnected",
            SwitchEvent::PacketIn { .. } => "packet_in",
            SwitchEvent::PortStatus { .. } => "port_status",
            SwitchEvent::FlowRemoved { .. } => "flow_removed",
            SwitchEvent::Error { .. } => "error",
        }
    }
}

/// Settings of switch connections.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// ECHO period.
    pub echo_interval: Duration,
    /// Default request timeout.
    pub request_timeout: Duration,
    /// Largest reassembled multipart reply.
    pub multipart_cap_bytes: usize,
    /// A socket write that does not complete within this closes the
    /// connection.
    pub write_timeout: Duration,
    /// Bytes queued for one connection's socket at most; a peer whose queue
    /// would grow beyond is disconnected.
    pub send_queue_bytes: usize,
    /// The only datapath ids accepted (None: any).
    pub allowed_dpids: Option<Arc<BTreeSet<u64>>>,
    /// A cluster node: the bring-up asks for no role (the forwarding core
    /// asks for MASTER or SLAVE with the generation id the cluster
    /// assigned) and asks for every asynchronous message in every role
    /// (SET_ASYNC), so that a slave follows the switch like its master.
    pub cluster: bool,
}

impl ConnConfig {
    /// Whether a switch with datapath id `dpid` may connect.
    pub fn dpid_allowed(&self, dpid: u64) -> bool {
        self.allowed_dpids
            .as_ref()
            .is_none_or(|set| set.contains(&dpid))
    }
}

enum Reply {
    Single(OfpMessage),
    Parts(Vec<Vec<u8>>),
    Counted(usize),
}

struct Pending {
    reply: oneshot::Sender<Result<Reply, OfError>>,
    /// A flow-stats poll: the parts go straight into the monitor, in order
    /// with FLOW_REMOVED messages of the same connection.
    ingest: bool,
    parts: Vec<Vec<u8>>,
    bytes: usize,
    /// When the first part arrived: the time the switch's counters are
    /// taken at (the last part of a large reply comes later).
    first_at: Option<std::time::Instant>,
    deadline: Instant,
    /// For the BARRIER closing a batch: the xids of the batch's messages.
    /// An ERROR with one of them is kept here and fails the batch when
    /// its BARRIER_REPLY arrives.
    batch: Vec<u32>,
    /// The first ERROR for a message of `batch`.
    error: Option<ErrorMsg>,
}

enum Command {
    Send(Vec<u8>),
    Request {
        xid: u32,
        bytes: Vec<u8>,
        deadline: Instant,
        ingest: bool,
        /// The xids of the messages sent before this request in `bytes`
        /// (a confirmed batch; empty otherwise).
        batch: Vec<u32>,
        reply: oneshot::Sender<Result<Reply, OfError>>,
    },
}

/// Out-of-band signals from the handles to their connection.
#[derive(Debug, Default)]
struct Signals {
    /// A command did not fit the command queue.
    stalled: Notify,
    /// Close the connection.
    close: Notify,
}

/// A cheap, cloneable handle to one switch connection. Nothing it does
/// waits for the switch to read: a full queue fails at once with
/// [`OfError::NotReading`] (and the connection is closed).
#[derive(Debug, Clone)]
pub struct SwitchHandle {
    dpid: u64,
    conn_id: u64,
    tx: mpsc::Sender<CommandBox>,
    signals: Arc<Signals>,
    xid: Arc<AtomicU32>,
    request_timeout: Duration,
}

/// Opaque wrapper so `Command` stays private.
pub struct CommandBox(Command);

impl std::fmt::Debug for CommandBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommandBox")
    }
}

impl SwitchHandle {
    /// Datapath id.
    pub fn dpid(&self) -> u64 {
        self.dpid
    }

    /// Connection id.
    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }

    fn next_xid(&self) -> u32 {
        // Never 0: some switches treat xid 0 specially.
        loop {
            let x = self.xid.fetch_add(1, Ordering::Relaxed);
            if x != 0 {
                return x;
            }
        }
    }

    fn encode(&self, xid: u32, body: Message) -> Result<Vec<u8>, OfError> {
        OfpMessage::new(xid, body)
            .to_vec()
            .map_err(|e| OfError::Encode(e.to_string()))
    }

    /// Queues `cmd` without waiting: a full queue means the connection is
    /// not keeping up, which closes it.
    fn push(&self, cmd: Command) -> Result<(), OfError> {
        match self.tx.try_send(CommandBox(cmd)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.signals.stalled.notify_one();
                Err(OfError::NotReading { dpid: self.dpid })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(OfError::Disconnected { dpid: self.dpid })
            }
        }
    }

    /// Sends a message that expects no reply.
    pub async fn send(&self, body: Message) -> Result<(), OfError> {
        let bytes = self.encode(self.next_xid(), body)?;
        self.push(Command::Send(bytes))
    }

    /// Sends a batch of messages followed by a BARRIER_REQUEST (not awaited).
    pub async fn send_batch(&self, batch: Vec<Message>) -> Result<(), OfError> {
        self.try_send_batch(batch)
    }

    /// [`SwitchHandle::send_batch`] for callers that must not even yield:
    /// queues the batch or fails at once.
    pub fn try_send_batch(&self, batch: Vec<Message>) -> Result<(), OfError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for m in batch {
            bytes.extend(self.encode(self.next_xid(), m)?);
        }
        bytes.extend(self.encode(self.next_xid(), Message::BarrierRequest)?);
        self.push(Command::Send(bytes))
    }

    /// Sends a batch of messages followed by a BARRIER_REQUEST and waits
    /// for the BARRIER_REPLY: Ok only when the switch answered none of the
    /// batch's messages with an ERROR (matched by xid), else
    /// [`OfError::Rejected`] with the first such ERROR. Nothing of the
    /// batch is undone on error: the caller removes what it installed.
    pub async fn send_batch_confirmed(&self, batch: Vec<Message>) -> Result<(), OfError> {
        let mut bytes = Vec::new();
        let mut xids = Vec::with_capacity(batch.len());
        for m in batch {
            let xid = self.next_xid();
            bytes.extend(self.encode(xid, m)?);
            xids.push(xid);
        }
        let reply = self
            .request_with(Message::BarrierRequest, false, bytes, xids)
            .await?;
        match reply {
            Reply::Single(OfpMessage {
                body: Message::BarrierReply,
                ..
            }) => Ok(()),
            Reply::Single(m) => Err(OfError::BadReply {
                dpid: self.dpid,
                why: format!("expected BARRIER_REPLY, got {}", m.body.name()),
            }),
            Reply::Parts(_) | Reply::Counted(_) => Err(OfError::BadReply {
                dpid: self.dpid,
                why: "multipart reply to a BARRIER".into(),
            }),
        }
    }

    async fn request_inner(&self, body: Message, ingest: bool) -> Result<Reply, OfError> {
        self.request_with(body, ingest, Vec::new(), Vec::new())
            .await
    }

    /// Sends `before` (messages already encoded, with xids `batch`) and
    /// then request `body` in one write, and waits for the reply.
    async fn request_with(
        &self,
        body: Message,
        ingest: bool,
        mut before: Vec<u8>,
        batch: Vec<u32>,
    ) -> Result<Reply, OfError> {
        let after = self.request_timeout;
        let xid = self.next_xid();
        before.extend(self.encode(xid, body)?);
        let bytes = before;
        let (tx, rx) = oneshot::channel();
        self.push(Command::Request {
            xid,
            bytes,
            deadline: Instant::now() + after,
            ingest,
            batch,
            reply: tx,
        })?;
        match tokio::time::timeout(after + Duration::from_secs(1), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(OfError::Disconnected { dpid: self.dpid }),
            Err(_) => Err(OfError::Timeout {
                dpid: self.dpid,
                after,
            }),
        }
    }

    /// Sends a request and waits for its single reply (BARRIER, ECHO,
    /// ROLE, GET_CONFIG, FEATURES...).
    pub async fn request(&self, body: Message) -> Result<OfpMessage, OfError> {
        match self.request_inner(body, false).await? {
            Reply::Single(m) => Ok(m),
            Reply::Parts(_) | Reply::Counted(_) => Err(OfError::BadReply {
                dpid: self.dpid,
                why: "multipart reply to a single request".into(),
            }),
        }
    }

    /// Waits until the switch has processed everything sent before.
    pub async fn barrier(&self) -> Result<(), OfError> {
        match self.request(Message::BarrierRequest).await?.body {
            Message::BarrierReply => Ok(()),
            other => Err(OfError::BadReply {
                dpid: self.dpid,
                why: format!("expected BARRIER_REPLY, got {}", other.name()),
            }),
        }
    }

    /// Sends a multipart request and returns the raw reply messages (all
    /// parts, header included), for zero-copy decoding on hot paths.
    pub async fn multipart_raw(&self, req: MultipartRequest) -> Result<Vec<Vec<u8>>, OfError> {
        match self
            .request_inner(Message::MultipartRequest(req), false)
            .await?
        {
            Reply::Parts(p) => Ok(p),
            Reply::Single(m) => Err(OfError::BadReply {
                dpid: self.dpid,
                why: format!("expected MULTIPART_REPLY, got {}", m.body.name()),
            }),
            Reply::Counted(_) => Err(OfError::BadReply {
                dpid: self.dpid,
                why: "unexpected counted reply".into(),
            }),
        }
    }

    /// Polls flow statistics: the reply's parts are added to the monitor by
    /// the connection itself, in order with the FLOW_REMOVED messages it
    /// reads, so a flow's final counter and its last statistics can never be
    /// counted twice. Returns the number of pair entries counted.
    pub async fn poll_flows(&self, req: ofp::FlowStatsRequest) -> Result<usize, OfError> {
        let body = Message::MultipartRequest(MultipartRequest {
            flags: 0,
            body: ofp::MultipartRequestBody::Flow(req),
        });
        match self.request_inner(body, true).await? {
            Reply::Counted(n) => Ok(n),
            _ => Err(OfError::BadReply {
                dpid: self.dpid,
                why: "flow statistics reply was not counted".into(),
            }),
        }
    }

    /// Sends a multipart request and returns the reassembled, decoded reply.
    pub async fn multipart(&self, req: MultipartRequest) -> Result<MultipartReply, OfError> {
        let parts = self.multipart_raw(req).await?;
        let bad = |why: String| OfError::BadReply {
            dpid: self.dpid,
            why,
        };
        let mut asm = ofp::MultipartAssembler::new(usize::MAX);
        let mut done = None;
        for p in &parts {
            let m = OfpMessage::decode(p).map_err(|e| bad(e.to_string()))?;
            let Message::MultipartReply(r) = m.body else {
                return Err(bad(format!("unexpected {}", m.body.name())));
            };
            done = asm.push(r, p.len()).map_err(|e| bad(e.to_string()))?;
        }
        done.ok_or_else(|| bad("multipart reply ended with MORE set".into()))
    }

    /// Closes the connection (at once; what is still queued is dropped).
    pub async fn close(&self) {
        self.signals.close.notify_one();
    }
}

/// Shared context of all connections.
#[derive(Clone)]
pub struct ConnContext {
    /// Settings.
    pub cfg: ConnConfig,
    /// Where droppable events go (PACKET_IN, PORT_STATUS, FLOW_REMOVED,
    /// ERROR): a queue per connection, served in turn; a full queue drops
    /// and counts.
    pub events: FairQueues<SwitchEvent>,
    /// Where connect and disconnect events go (never dropped; at most two
    /// per accepted connection).
    pub control: mpsc::UnboundedSender<SwitchEvent>,
    /// The monitor (FLOW_REMOVED counters are added in order with replies).
    pub monitor: Arc<Mutex<Monitor>>,
    /// Becomes true on shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// Counts PACKET_INs dropped because the controller was saturated.
    pub packet_in_drops: Arc<AtomicU64>,
    /// Counts other events (PORT_STATUS, FLOW_REMOVED, ERROR) dropped
    /// because the controller was saturated.
    pub event_drops: Arc<AtomicU64>,
    /// Counts connections closed because the peer did not read.
    pub not_reading: Arc<AtomicU64>,
    /// Counts messages by type and direction (after the handshake).
    pub messages: Arc<crate::monitor::ofcount::OfMessageCounters>,
}

/// Why a write was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueRefusal {
    /// The queue would exceed its byte cap.
    Full,
    /// The writer has ended.
    Closed,
}

/// Whether `len` more bytes fit a queue holding `queued` under `cap`. One
/// message larger than the cap still passes an empty queue.
fn queue_admits(queued: usize, len: usize, cap: usize) -> bool {
    queued == 0 || queued.saturating_add(len) <= cap
}

/// The sending side of a connection's write queue, bounded in bytes.
struct WriteQueue {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    cap: usize,
}

impl WriteQueue {
    /// Queues `bytes` for the writer, never waiting.
    fn push(&self, bytes: Vec<u8>) -> Result<(), QueueRefusal> {
        let len = bytes.len();
        // One producer (the reader loop): load-then-add cannot race.
        if !queue_admits(self.queued.load(Ordering::Acquire), len, self.cap) {
            return Err(QueueRefusal::Full);
        }
        self.queued.fetch_add(len, Ordering::AcqRel);
        self.tx.send(bytes).map_err(|_| QueueRefusal::Closed)
    }
}

/// How a writer task ended.
#[derive(Debug)]
enum WriterEnd {
    /// Its queue was closed.
    Closed,
    /// A write failed.
    Failed(String),
    /// A write did not complete in time: the peer does not read.
    TimedOut(Duration),
}

/// How a connection's reader loop ended.
#[derive(Debug)]
enum End {
    /// The peer does not read what it is sent.
    NotReading(String),
    /// Any other end.
    Other(String),
}

impl End {
    fn reason(&self) -> String {
        match self {
            End::NotReading(why) => format!("not reading ({why})"),
            End::Other(why) => why.clone(),
        }
    }
}

/// Bytes gathered into one socket write at most (beyond one message).
const WRITE_BATCH: usize = 64 * 1024;

/// Writes everything queued, each write bounded by `timeout`.
async fn writer_task<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    timeout: Duration,
    counters: Arc<crate::monitor::ofcount::OfMessageCounters>,
) -> WriterEnd {
    // Whatever is queued goes out in one write (one system call and one
    // timer for a burst of FLOW_MODs and PACKET_OUTs, not one each).
    let mut batch: Vec<u8> = Vec::new();
    while let Some(b) = rx.recv().await {
        batch.clear();
        batch.extend_from_slice(&b);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        match tokio::time::timeout(timeout, wr.write_all(&batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return WriterEnd::Failed(format!("write: {e}")),
            Err(_) => return WriterEnd::TimedOut(timeout),
        }
        queued.fetch_sub(batch.len(), Ordering::AcqRel);
        counters.sent(&batch);
        if batch.capacity() > 4 * WRITE_BATCH {
            batch = Vec::new();
        }
    }
    let _ = tokio::time::timeout(timeout, wr.shutdown()).await;
    WriterEnd::Closed
}

/// Writes `bytes` during the handshake, bounded by `timeout`.
async fn write_timed<W: AsyncWrite + Unpin>(
    wr: &mut W,
    bytes: &[u8],
    timeout: Duration,
    what: &str,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, wr.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write {what}: {e}")),
        Err(_) => Err(format!("write {what}: not done within {timeout:?}")),
    }
}

/// Hands `ev` to the core without waiting; counts it when the
/// connection's queue (or all queues) is full (PACKET_INs and other events
/// separately, warning at powers of two).
fn forward(conn: &Conn<'_>, ev: SwitchEvent) {
    let Err((_, ev)) = conn.events.try_send(ev) else {
        return;
    };
    let ctx = conn.ctx;
    match ev {
        SwitchEvent::PacketIn { .. } => {
            ctx.packet_in_drops.fetch_add(1, Ordering::Relaxed);
        }
        other => {
            let n = ctx.event_drops.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                warn!(
                    dropped_total = n,
                    event = other.kind(),
                    "event dropped: the forwarding core is saturated"
                );
            }
        }
    }
}

static CONN_IDS: AtomicU64 = AtomicU64::new(1);
static ROLE_GENERATION: AtomicU64 = AtomicU64::new(0);

/// The role generation id of a single controller's next MASTER request:
/// microseconds since the Unix epoch, and always more than the last one.
/// A switch refuses a generation lower than one it has seen, so a counter
/// from 1 had a restarted controller refused as stale by every switch
/// (seen in `tests/e2e_operator.rs`); the clock makes each run's ids
/// larger than the previous run's.
fn single_generation() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mut last = ROLE_GENERATION.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match ROLE_GENERATION.compare_exchange_weak(
            last,
            next,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Accepts switches on `listener` until shutdown; one task per switch.
/// With `tls`, a switch must complete a TLS handshake (and present a
/// certificate of the configured CA) within the request timeout first.
pub async fn serve(
    listener: TcpListener,
    ctx: ConnContext,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) {
    let mut shutdown = ctx.shutdown.clone();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, peer)) => {
                    let ctx = ctx.clone();
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let _ = sock.set_nodelay(true);
                        let r = match acceptor {
                            None => run_connection(sock, peer, ctx).await,
                            Some(a) => {
                                let hs = tokio::time::timeout(ctx.cfg.request_timeout, a.accept(sock)).await;
                                match hs {
                                    Ok(Ok(s)) => run_connection(s, peer, ctx).await,
                                    Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                                    Err(_) => Err("TLS handshake timed out".to_string()),
                                }
                            }
                        };
                        if let Err(e) = r {
                            info!(%peer, error = %e, "switch connection ended");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break; }
            }
        }
    }
    info!("OpenFlow listener stopped");
}

/// Reads from `sock` into `buf` until one whole message is framed; returns
/// its bytes. `Ok(None)` on EOF.
async fn read_frame(
    sock: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
) -> Result<Option<Vec<u8>>, String> {
    loop {
        match ofp::check_frame(buf) {
            Ok(Some(len)) => {
                let frame = buf[..len].to_vec();
                buf.advance(len);
                return Ok(Some(frame));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("framing error: {e}")),
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        match sock.read_buf(buf).await {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

fn encode(xid: u32, body: Message) -> Vec<u8> {
    // Messages built here are small and fixed; an encoding failure is a bug
    // in the codec, logged and replaced by nothing.
    match OfpMessage::new(xid, body).to_vec() {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "cannot encode a controller message");
            Vec::new()
        }
    }
}

/// HELLO exchange: Ok when the peer speaks 1.3; on a mismatch sends
/// HELLO_FAILED and returns the error.
fn negotiate(hello: &Hello) -> Result<(), String> {
    if hello.supports(OFP_VERSION) {
        Ok(())
    } else {
        Err(format!(
            "switch speaks OpenFlow wire version {} (bitmap {:?}); only 1.3 (0x04) is supported",
            hello.version, hello.bitmap
        ))
    }
}

async fn run_connection<S>(sock: S, peer: SocketAddr, ctx: ConnContext) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let conn_id = CONN_IDS.fetch_add(1, Ordering::Relaxed);
    let (mut rd, mut wr) = tokio::io::split(sock);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let hs_timeout = ctx.cfg.request_timeout;
    let wt = ctx.cfg.write_timeout;

    // HELLO both ways.
    write_timed(
        &mut wr,
        &encode(1, Message::Hello(Hello::of13())),
        wt,
        "HELLO",
    )
    .await?;
    let hello = tokio::time::timeout(hs_timeout, async {
        loop {
            let Some(frame) = read_frame(&mut rd, &mut buf).await? else {
                return Err("closed before HELLO".to_string());
            };
            match OfpMessage::decode(&frame) {
                Ok(OfpMessage {
                    body: Message::Hello(h),
                    xid,
                }) => return Ok((h, xid)),
                Ok(m) => debug!(%peer, msg = m.body.name(), "ignored before HELLO"),
                Err(e) => {
                    // A HELLO of another version may not decode beyond its
                    // header: refuse it properly.
                    if frame.get(1) == Some(&ty::HELLO) {
                        let v = frame.first().copied().unwrap_or(0);
                        return Ok((
                            Hello {
                                version: v,
                                bitmap: None,
                                other_elements: Vec::new(),
                            },
                            0,
                        ));
                    }
                    return Err(format!("undecodable message before HELLO: {e}"));
                }
            }
        }
    })
    .await
    .map_err(|_| "no HELLO from switch".to_string())??;
    if let Err(why) = negotiate(&hello.0) {
        warn!(%peer, version = hello.0.version, "refusing switch: {why}");
        let err = ErrorMsg {
            kind: ErrorKind::from_type_code(0, 0), // HELLO_FAILED / INCOMPATIBLE
            data: why.clone().into_bytes(),
        };
        let _ = write_timed(&mut wr, &encode(hello.1, Message::Error(err)), wt, "ERROR").await;
        let _ = tokio::time::timeout(wt, wr.shutdown()).await;
        return Err(why);
    }

    // FEATURES → datapath id.
    write_timed(
        &mut wr,
        &encode(2, Message::FeaturesRequest),
        wt,
        "FEATURES_REQUEST",
    )
    .await?;
    let features = tokio::time::timeout(hs_timeout, async {
        loop {
            let Some(frame) = read_frame(&mut rd, &mut buf).await? else {
                return Err("closed before FEATURES_REPLY".to_string());
            };
            match OfpMessage::decode(&frame) {
                Ok(OfpMessage {
                    body: Message::FeaturesReply(f),
                    ..
                }) => return Ok(f),
                Ok(OfpMessage {
                    body: Message::EchoRequest(d),
                    xid,
                }) => {
                    write_timed(
                        &mut wr,
                        &encode(xid, Message::EchoReply(d)),
                        wt,
                        "ECHO_REPLY",
                    )
                    .await?;
                }
                Ok(OfpMessage {
                    body: Message::Error(e),
                    ..
                }) => return Err(format!("switch sent ERROR during handshake: {e:?}")),
                Ok(_) => {}
                Err(e) => warn!(%peer, error = %e, "undecodable message during handshake"),
            }
        }
    })
    .await
    .map_err(|_| "no FEATURES_REPLY from switch".to_string())??;
    let dpid = features.datapath_id;
    if features.auxiliary_id != 0 {
        return Err(format!(
            "auxiliary connection {} of {dpid:016x} refused",
            features.auxiliary_id
        ));
    }
    if !ctx.cfg.dpid_allowed(dpid) {
        warn!(%peer, conn_id, "switch {dpid:016x} refused: not in openflow.allowed_dpids");
        let _ = tokio::time::timeout(wt, wr.shutdown()).await;
        return Err(format!("datapath id {dpid:016x} is not allowed"));
    }
    info!(%peer, dpid = %format!("{dpid:016x}"), conn_id, "switch connected");

    // Writer task, fed by a queue bounded in bytes.
    let (wtx, wrx) = mpsc::unbounded_channel::<Vec<u8>>();
    let queued = Arc::new(AtomicUsize::new(0));
    let wq = WriteQueue {
        tx: wtx,
        queued: queued.clone(),
        cap: ctx.cfg.send_queue_bytes,
    };
    let mut writer = tokio::spawn(writer_task(wr, wrx, queued, wt, ctx.messages.clone()));

    let (ctx_tx, mut cmd_rx) = mpsc::channel::<CommandBox>(COMMAND_QUEUE);
    let signals = Arc::new(Signals::default());
    let handle = SwitchHandle {
        dpid,
        conn_id,
        tx: ctx_tx,
        signals: signals.clone(),
        xid: Arc::new(AtomicU32::new(16)),
        request_timeout: ctx.cfg.request_timeout,
    };

    // Bring-up runs beside the reader loop (it needs replies).
    let bring_up = {
        let h = handle.clone();
        let control = ctx.control.clone();
        let cluster = ctx.cfg.cluster;
        tokio::spawn(async move {
            let r = bring_up(&h, peer, features, cluster).await;
            match r {
                Ok(ev) => {
                    let _ = control.send(ev);
                }
                Err(e) => {
                    warn!(dpid = %format!("{dpid:016x}"), error = %e, "switch bring-up failed");
                    h.close().await;
                }
            }
        })
    };

    let events = ctx.events.conn();
    let conn = Conn {
        dpid,
        conn_id,
        wq: &wq,
        ctx: &ctx,
        events: &events,
    };
    let end = reader_loop(&conn, &mut rd, &mut buf, &mut writer, &mut cmd_rx, &signals).await;
    // The writer ended first: its own end says why (a timed-out write is a
    // peer that does not read).
    let end = match end {
        End::Other(w) if w == WRITER_ENDED => {
            match tokio::time::timeout(Duration::from_secs(1), &mut writer).await {
                Ok(Ok(WriterEnd::TimedOut(t))) => {
                    End::NotReading(format!("a write did not complete within {t:?}"))
                }
                Ok(Ok(WriterEnd::Failed(e))) => End::Other(e),
                _ => End::Other(w),
            }
        }
        e => e,
    };
    bring_up.abort();
    // What is still queued fails like the pending requests did.
    cmd_rx.close();
    let fail = match &end {
        End::NotReading(_) => OfError::NotReading { dpid },
        End::Other(_) => OfError::Disconnected { dpid },
    };
    while let Ok(CommandBox(c)) = cmd_rx.try_recv() {
        if let Command::Request { reply, .. } = c {
            let _ = reply.send(Err(fail.clone()));
        }
    }
    drop(wq);
    match &end {
        End::NotReading(why) => {
            writer.abort();
            ctx.not_reading.fetch_add(1, Ordering::Relaxed);
            warn!(%peer, conn_id, %why, "switch {dpid:016x} not reading: disconnected");
        }
        End::Other(_) => {
            // Lets the writer flush what is queued (bounded by the write
            // timeout), unless it has ended already.
            if !writer.is_finished() && tokio::time::timeout(wt, &mut writer).await.is_err() {
                writer.abort();
            }
        }
    }
    let reason = end.reason();
    info!(dpid = %format!("{dpid:016x}"), conn_id, %reason, "switch disconnected");
    let _ = ctx.control.send(SwitchEvent::Disconnected {
        dpid,
        conn_id,
        reason,
    });
    Ok(())
}

/// Why a reader loop ends when it finds the writer's queue closed (the
/// writer's own end then tells why).
const WRITER_ENDED: &str = "writer ended";

/// What the reader loop and the frame handler share about a connection.
struct Conn<'a> {
    dpid: u64,
    conn_id: u64,
    wq: &'a WriteQueue,
    ctx: &'a ConnContext,
    /// This connection's queue of droppable events to the core.
    events: &'a ConnSender<SwitchEvent>,
}

impl Conn<'_> {
    /// Queues bytes for the peer; a full queue ends the connection.
    fn write(&self, bytes: Vec<u8>) -> Result<(), End> {
        match self.wq.push(bytes) {
            Ok(()) => Ok(()),
            Err(QueueRefusal::Full) => Err(End::NotReading(format!(
                "send queue over {} bytes",
                self.wq.cap
            ))),
            Err(QueueRefusal::Closed) => Err(End::Other(WRITER_ENDED.to_string())),
        }
    }
}

async fn bring_up(
    h: &SwitchHandle,
    peer: SocketAddr,
    features: SwitchFeatures,
    cluster: bool,
) -> Result<SwitchEvent, OfError> {
    h.send(Message::SetConfig(ofp::SwitchConfig {
        flags: 0,
        miss_send_len: ofp::CONTROLLER_MAX_LEN_NO_BUFFER,
    }))
    .await?;
    if cluster {
        h.send(Message::SetAsync(ofp::AsyncConfig::ALL)).await?;
        return finish_bring_up(h, peer, features).await;
    }
    let generation_id = single_generation();
    match h
        .request(Message::RoleRequest(ofp::RoleMsg {
            role: ofp::ControllerRole::Master,
            generation_id,
        }))
        .await
    {
        Ok(_) => {}
        Err(OfError::Rejected { error, .. }) => {
            warn!(dpid = %format!("{:016x}", h.dpid), ?error, "ROLE master refused")
        }
        Err(e) => return Err(e),
    }
    finish_bring_up(h, peer, features).await
}

/// Ports and description of a switch whose role is settled.
async fn finish_bring_up(
    h: &SwitchHandle,
    peer: SocketAddr,
    features: SwitchFeatures,
) -> Result<SwitchEvent, OfError> {
    let ports = match h
        .multipart(MultipartRequest {
            flags: 0,
            body: ofp::MultipartRequestBody::PortDesc,
        })
        .await?
        .body
    {
        ofp::MultipartReplyBody::PortDesc(p) => p,
        _ => {
            return Err(OfError::BadReply {
                dpid: h.dpid,
                why: "PORT_DESC answered with another body".into(),
            })
        }
    };
    let description = match h
        .multipart(MultipartRequest {
            flags: 0,
            body: ofp::MultipartRequestBody::Desc,
        })
        .await
    {
        Ok(MultipartReply {
            body: ofp::MultipartReplyBody::Desc(d),
            ..
        }) => Some(
            format!("{} {} {}", d.mfr_desc, d.sw_desc, d.dp_desc)
                .trim()
                .to_string(),
        ),
        _ => None,
    };
    Ok(SwitchEvent::Connected {
        dpid: h.dpid,
        conn_id: h.conn_id,
        peer,
        features,
        ports,
        description,
        handle: h.clone(),
    })
}

async fn reader_loop(
    conn: &Conn<'_>,
    rd: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    writer: &mut JoinHandle<WriterEnd>,
    cmd_rx: &mut mpsc::Receiver<CommandBox>,
    signals: &Signals,
) -> End {
    let (dpid, ctx) = (conn.dpid, conn.ctx);
    let echo = ctx.cfg.echo_interval;
    let mut last_rx = Instant::now();
    let mut tick = tokio::time::interval(echo.min(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_echo_sent = Instant::now();
    let mut pending: HashMap<u32, Pending> = HashMap::new();
    let mut shutdown = ctx.shutdown.clone();
    let mut echo_xid: u32 = 0x8000_0000;
    let dpid_s = format!("{dpid:016x}");

    let end = loop {
        let step: Result<(), End> = tokio::select! {
            frame = read_frame(rd, buf) => match frame {
                Ok(Some(f)) => {
                    last_rx = Instant::now();
                    handle_frame(conn, &f, &mut pending)
                }
                Ok(None) => Err(End::Other("peer closed the connection".to_string())),
                Err(e) => Err(End::Other(e)),
            },
            cmd = cmd_rx.recv() => match cmd {
                Some(CommandBox(Command::Send(b))) => conn.write(b),
                Some(CommandBox(Command::Request { xid, bytes, deadline, ingest, batch, reply })) => {
                    pending.insert(xid, Pending { reply, ingest, parts: Vec::new(), bytes: 0, first_at: None, deadline, batch, error: None });
                    conn.write(bytes)
                }
                None => Err(End::Other("closed by controller".to_string())),
            },
            w = &mut *writer => Err(match w {
                Ok(WriterEnd::TimedOut(t)) => End::NotReading(format!("a write did not complete within {t:?}")),
                Ok(WriterEnd::Failed(e)) => End::Other(e),
                Ok(WriterEnd::Closed) | Err(_) => End::Other("writer gone".to_string()),
            }),
            _ = signals.stalled.notified() => {
                Err(End::NotReading(format!("command queue full ({COMMAND_QUEUE} commands)")))
            }
            _ = signals.close.notified() => Err(End::Other("closed by controller".to_string())),
            _ = tick.tick() => {
                let now = Instant::now();
                let quiet = now.saturating_duration_since(last_rx);
                let expired: Vec<u32> = pending.iter().filter(|(_, p)| p.deadline <= now).map(|(x, _)| *x).collect();
                for x in expired {
                    if let Some(p) = pending.remove(&x) {
                        debug!(dpid = %dpid_s, xid = x, "request timed out");
                        let _ = p.reply.send(Err(OfError::Timeout { dpid, after: Duration::ZERO }));
                    }
                }
                if quiet > echo * 3 {
                    Err(End::Other(format!("peer silent for {quiet:?} (dead)")))
                } else if quiet >= echo && now.saturating_duration_since(last_echo_sent) >= echo {
                    echo_xid = echo_xid.wrapping_add(1) | 0x8000_0000;
                    last_echo_sent = now;
                    conn.write(encode(echo_xid, Message::EchoRequest(Vec::new())))
                } else {
                    Ok(())
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    Err(End::Other("controller shutting down".to_string()))
                } else {
                    Ok(())
                }
            }
        };
        if let Err(end) = step {
            break end;
        }
    };
    let fail = match &end {
        End::NotReading(_) => OfError::NotReading { dpid },
        End::Other(_) => OfError::Disconnected { dpid },
    };
    for (_, p) in pending.drain() {
        let _ = p.reply.send(Err(fail.clone()));
    }
    end
}

fn ingest_flows(
    dpid: u64,
    ctx: &ConnContext,
    parts: &[Vec<u8>],
    now: std::time::Instant,
) -> Result<Reply, OfError> {
    let mut m = ctx.monitor.lock().map_err(|_| OfError::BadReply {
        dpid,
        why: "monitor lock poisoned".into(),
    })?;
    match m.ingest_flow_stats(dpid, now, parts) {
        Ok(n) => Ok(Reply::Counted(n)),
        Err(e) => {
            warn!(dpid = %format!("{dpid:016x}"), error = %e, "malformed flow statistics reply");
            Err(OfError::BadReply {
                dpid,
                why: e.to_string(),
            })
        }
    }
}

/// Handles one framed message without waiting for anything. Err ends the
/// connection.
fn handle_frame(
    conn: &Conn<'_>,
    frame: &[u8],
    pending: &mut HashMap<u32, Pending>,
) -> Result<(), End> {
    let (dpid, conn_id, ctx) = (conn.dpid, conn.conn_id, conn.ctx);
    let hdr = ofp::Header::parse(frame).map_err(|e| End::Other(e.to_string()))?;
    ctx.messages.received(hdr.msg_type);
    // Multipart parts of a pending request are kept raw (decoded by the
    // requester, zero-copy on the monitor's hot path).
    if hdr.msg_type == ty::MULTIPART_REPLY && hdr.version == OFP_VERSION {
        if let Some(p) = pending.get_mut(&hdr.xid) {
            let flags = frame
                .get(10..12)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .unwrap_or(0);
            p.bytes += frame.len();
            if p.bytes > ctx.cfg.multipart_cap_bytes {
                if let Some(p) = pending.remove(&hdr.xid) {
                    warn!(dpid = %format!("{dpid:016x}"), xid = hdr.xid, "multipart reply over the size cap");
                    let _ = p.reply.send(Err(OfError::BadReply {
                        dpid,
                        why: format!("multipart reply over {} bytes", ctx.cfg.multipart_cap_bytes),
                    }));
                }
                return Ok(());
            }
            p.first_at.get_or_insert_with(std::time::Instant::now);
            p.parts.push(frame.to_vec());
            if flags & MPF_MORE == 0 {
                if let Some(p) = pending.remove(&hdr.xid) {
                    let r = if p.ingest {
                        let at = p.first_at.unwrap_or_else(std::time::Instant::now);
                        ingest_flows(dpid, ctx, &p.parts, at)
                    } else {
                        Ok(Reply::Parts(p.parts))
                    };
                    let _ = p.reply.send(r);
                }
            }
            return Ok(());
        }
    }
    let msg = match OfpMessage::decode(frame) {
        Ok(m) => m,
        Err(e) => {
            warn!(dpid = %format!("{dpid:016x}"), msg_type = hdr.msg_type, xid = hdr.xid, error = %e, "undecodable message from switch");
            if let Some(p) = pending.remove(&hdr.xid) {
                let _ = p.reply.send(Err(OfError::BadReply {
                    dpid,
                    why: e.to_string(),
                }));
            }
            // Tell the switch (BAD_REQUEST / BAD_LEN), keep the connection.
            if hdr.msg_type != ty::ERROR {
                let err = ErrorMsg {
                    kind: ErrorKind::from_type_code(1, 6),
                    data: frame.iter().take(64).copied().collect(),
                };
                conn.write(encode(hdr.xid, Message::Error(err)))?;
            }
            return Ok(());
        }
    };
    let xid = msg.xid;
    match msg.body {
        Message::EchoRequest(d) => {
            conn.write(encode(xid, Message::EchoReply(d)))?;
        }
        Message::EchoReply(_) => {}
        Message::PacketIn(p) => forward(
            conn,
            SwitchEvent::PacketIn {
                dpid,
                conn_id,
                msg: p,
            },
        ),
        Message::PortStatus(p) => forward(
            conn,
            SwitchEvent::PortStatus {
                dpid,
                conn_id,
                msg: p,
            },
        ),
        Message::FlowRemoved(fr) => {
            if let Ok(mut m) = ctx.monitor.lock() {
                m.flow_removed(dpid, &fr);
            }
            forward(conn, SwitchEvent::FlowRemoved { dpid, msg: fr });
        }
        Message::Error(e) => {
            if let Some(p) = pending.remove(&xid) {
                let _ = p.reply.send(Err(OfError::Rejected { dpid, error: e }));
            } else if let Some(p) = pending.values_mut().find(|p| p.batch.contains(&xid)) {
                // A message of a confirmed batch: fails the batch at its
                // BARRIER_REPLY (the switch goes on with the rest).
                warn!(dpid = %format!("{dpid:016x}"), xid, error = ?e.kind, "switch refused a message of a batch");
                if p.error.is_none() {
                    p.error = Some(e);
                }
            } else {
                warn!(dpid = %format!("{dpid:016x}"), xid, error = ?e.kind, "switch reported an error");
                forward(conn, SwitchEvent::Error { dpid, xid, msg: e });
            }
        }
        body => {
            if let Some(p) = pending.remove(&xid) {
                let r = match p.error {
                    Some(error) => Err(OfError::Rejected { dpid, error }),
                    None => Ok(Reply::Single(OfpMessage { xid, body })),
                };
                let _ = p.reply.send(r);
            } else {
                debug!(dpid = %format!("{dpid:016x}"), msg = body.name(), xid, "unsolicited message ignored");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_queue_is_bounded_in_bytes() {
        assert!(queue_admits(0, 10, 100));
        assert!(queue_admits(90, 10, 100));
        assert!(!queue_admits(91, 10, 100));
        // One message larger than the cap still passes an empty queue.
        assert!(queue_admits(0, 1000, 100));
        assert!(!queue_admits(1, usize::MAX, 100));
    }

    #[test]
    fn a_full_write_queue_refuses_without_waiting() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let q = WriteQueue {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            cap: 100,
        };
        assert_eq!(q.push(vec![0; 60]), Ok(()));
        assert_eq!(q.push(vec![0; 40]), Ok(()));
        assert_eq!(q.push(vec![0; 1]), Err(QueueRefusal::Full));
        assert_eq!(q.queued.load(Ordering::SeqCst), 100);
        // The writer drained one message: room again.
        let b = rx.try_recv().expect("queued");
        q.queued.fetch_sub(b.len(), Ordering::SeqCst);
        assert_eq!(q.push(vec![0; 50]), Ok(()));
        drop(rx);
        assert_eq!(q.push(vec![0; 1]), Err(QueueRefusal::Closed));
    }

    #[test]
    fn the_allowlist_admits_only_its_dpids() {
        let mut cfg = ConnConfig {
            echo_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            multipart_cap_bytes: 1 << 20,
            write_timeout: Duration::from_secs(2),
            send_queue_bytes: 1 << 20,
            allowed_dpids: None,
            cluster: false,
        };
        assert!(cfg.dpid_allowed(0x11));
        cfg.allowed_dpids = Some(Arc::new([0x11, 0x21].into_iter().collect()));
        assert!(cfg.dpid_allowed(0x11));
        assert!(cfg.dpid_allowed(0x21));
        assert!(!cfg.dpid_allowed(0x22));
    }

    /// A peer that never reads: the write that cannot complete ends the
    /// writer with TimedOut instead of waiting for ever.
    #[tokio::test]
    async fn a_write_the_peer_never_reads_times_out() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let w = tokio::spawn(writer_task(
            ours,
            rx,
            queued.clone(),
            Duration::from_millis(200),
            Arc::default(),
        ));
        tx.send(vec![0u8; 64 * 1024]).expect("queued");
        let end = tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .expect("writer ended")
            .expect("no panic");
        assert!(matches!(end, WriterEnd::TimedOut(_)), "{end:?}");
    }

    /// A handle whose command queue is full fails at once with NotReading
    /// and tells the connection to close.
    #[tokio::test]
    async fn a_full_command_queue_fails_fast() {
        let (tx, _rx) = mpsc::channel(1);
        let h = SwitchHandle {
            dpid: 7,
            conn_id: 1,
            tx,
            signals: Arc::new(Signals::default()),
            xid: Arc::new(AtomicU32::new(1)),
            request_timeout: Duration::from_secs(60),
        };
        h.send(Message::BarrierRequest).await.expect("first fits");
        let t = Instant::now();
        let e = h.barrier().await.expect_err("queue full");
        assert!(matches!(e, OfError::NotReading { dpid: 7 }), "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(1));
        // The connection is told.
        tokio::time::timeout(Duration::from_secs(1), h.signals.stalled.notified())
            .await
            .expect("stall signalled");
    }
}
