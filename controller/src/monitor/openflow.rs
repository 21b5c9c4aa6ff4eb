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
//! Writes go through a separate writer task so that a slow peer never stalls
//! the reader. Framing is check-then-parse (`ofp::check_frame`): a partial
//! message waits for more bytes, an impossible length closes the connection,
//! and a message that fails to decode is logged and answered with an ERROR
//! while the connection goes on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use ofp::{
    ErrorKind, ErrorMsg, FlowRemoved, Hello, Message, MultipartReply, MultipartRequest, OfpMessage,
    PacketIn, PortDesc, PortStatus, SwitchFeatures, OFP_VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::monitor::stats::Monitor;

/// OpenFlow message type numbers used by the framing layer.
mod ty {
    pub const HELLO: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const MULTIPART_REPLY: u8 = 19;
}
/// `OFPMPF_REPLY_MORE`.
const MPF_MORE: u16 = 1;

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

/// Settings of switch connections.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// ECHO period.
    pub echo_interval: Duration,
    /// Default request timeout.
    pub request_timeout: Duration,
    /// Largest reassembled multipart reply.
    pub multipart_cap_bytes: usize,
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
    deadline: Instant,
}

enum Command {
    Send(Vec<u8>),
    Request {
        xid: u32,
        bytes: Vec<u8>,
        deadline: Instant,
        ingest: bool,
        reply: oneshot::Sender<Result<Reply, OfError>>,
    },
    Close,
}

/// A cheap, cloneable handle to one switch connection.
#[derive(Debug, Clone)]
pub struct SwitchHandle {
    dpid: u64,
    conn_id: u64,
    tx: mpsc::Sender<CommandBox>,
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

    async fn push(&self, cmd: Command) -> Result<(), OfError> {
        self.tx
            .send(CommandBox(cmd))
            .await
            .map_err(|_| OfError::Disconnected { dpid: self.dpid })
    }

    /// Sends a message that expects no reply.
    pub async fn send(&self, body: Message) -> Result<(), OfError> {
        let bytes = self.encode(self.next_xid(), body)?;
        self.push(Command::Send(bytes)).await
    }

    /// Sends a batch of messages followed by a BARRIER_REQUEST (not awaited).
    pub async fn send_batch(&self, batch: Vec<Message>) -> Result<(), OfError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for m in batch {
            bytes.extend(self.encode(self.next_xid(), m)?);
        }
        bytes.extend(self.encode(self.next_xid(), Message::BarrierRequest)?);
        self.push(Command::Send(bytes)).await
    }

    async fn request_inner(&self, body: Message, ingest: bool) -> Result<Reply, OfError> {
        let after = self.request_timeout;
        let xid = self.next_xid();
        let bytes = self.encode(xid, body)?;
        let (tx, rx) = oneshot::channel();
        self.push(Command::Request {
            xid,
            bytes,
            deadline: Instant::now() + after,
            ingest,
            reply: tx,
        })
        .await?;
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

    /// Closes the connection.
    pub async fn close(&self) {
        let _ = self.push(Command::Close).await;
    }
}

/// Shared context of all connections.
#[derive(Clone)]
pub struct ConnContext {
    /// Settings.
    pub cfg: ConnConfig,
    /// Where events go.
    pub events: mpsc::Sender<SwitchEvent>,
    /// The monitor (FLOW_REMOVED counters are added in order with replies).
    pub monitor: Arc<Mutex<Monitor>>,
    /// Becomes true on shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// Counts PACKET_INs dropped because the controller was saturated.
    pub packet_in_drops: Arc<AtomicU64>,
}

static CONN_IDS: AtomicU64 = AtomicU64::new(1);
static ROLE_GENERATION: AtomicU64 = AtomicU64::new(1);

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

    // HELLO both ways.
    wr.write_all(&encode(1, Message::Hello(Hello::of13())))
        .await
        .map_err(|e| format!("write HELLO: {e}"))?;
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
        let _ = wr.write_all(&encode(hello.1, Message::Error(err))).await;
        let _ = wr.shutdown().await;
        return Err(why);
    }

    // FEATURES → datapath id.
    wr.write_all(&encode(2, Message::FeaturesRequest))
        .await
        .map_err(|e| format!("write FEATURES_REQUEST: {e}"))?;
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
                    wr.write_all(&encode(xid, Message::EchoReply(d)))
                        .await
                        .map_err(|e| format!("write: {e}"))?;
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
    info!(%peer, dpid = %format!("{dpid:016x}"), conn_id, "switch connected");

    // Writer task.
    let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(1024);
    let writer = tokio::spawn(async move {
        while let Some(b) = wrx.recv().await {
            if let Err(e) = wr.write_all(&b).await {
                return format!("write: {e}");
            }
        }
        let _ = wr.shutdown().await;
        "closed".to_string()
    });

    let (ctx_tx, mut cmd_rx) = mpsc::channel::<CommandBox>(1024);
    let handle = SwitchHandle {
        dpid,
        conn_id,
        tx: ctx_tx,
        xid: Arc::new(AtomicU32::new(16)),
        request_timeout: ctx.cfg.request_timeout,
    };

    // Bring-up runs beside the reader loop (it needs replies).
    let bring_up = {
        let h = handle.clone();
        let events = ctx.events.clone();
        tokio::spawn(async move {
            let r = bring_up(&h, peer, features).await;
            match r {
                Ok(ev) => {
                    let _ = events.send(ev).await;
                }
                Err(e) => {
                    warn!(dpid = %format!("{dpid:016x}"), error = %e, "switch bring-up failed");
                    h.close().await;
                }
            }
        })
    };

    let reason = reader_loop(dpid, conn_id, &mut rd, &mut buf, &wtx, &mut cmd_rx, &ctx).await;
    bring_up.abort();
    drop(wtx);
    let _ = writer.await;
    info!(dpid = %format!("{dpid:016x}"), conn_id, %reason, "switch disconnected");
    let _ = ctx
        .events
        .send(SwitchEvent::Disconnected {
            dpid,
            conn_id,
            reason: reason.clone(),
        })
        .await;
    Ok(())
}

async fn bring_up(
    h: &SwitchHandle,
    peer: SocketAddr,
    features: SwitchFeatures,
) -> Result<SwitchEvent, OfError> {
    h.send(Message::SetConfig(ofp::SwitchConfig {
        flags: 0,
        miss_send_len: ofp::CONTROLLER_MAX_LEN_NO_BUFFER,
    }))
    .await?;
    let generation_id = ROLE_GENERATION.fetch_add(1, Ordering::Relaxed);
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

#[allow(clippy::too_many_arguments)]
async fn reader_loop(
    dpid: u64,
    conn_id: u64,
    rd: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    wtx: &mpsc::Sender<Vec<u8>>,
    cmd_rx: &mut mpsc::Receiver<CommandBox>,
    ctx: &ConnContext,
) -> String {
    let echo = ctx.cfg.echo_interval;
    let mut last_rx = Instant::now();
    let mut tick = tokio::time::interval(echo.min(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_echo_sent = Instant::now();
    let mut pending: HashMap<u32, Pending> = HashMap::new();
    let mut shutdown = ctx.shutdown.clone();
    let mut echo_xid: u32 = 0x8000_0000;
    let dpid_s = format!("{dpid:016x}");

    let reason = loop {
        tokio::select! {
            frame = read_frame(rd, buf) => {
                let frame = match frame {
                    Ok(Some(f)) => f,
                    Ok(None) => break "peer closed the connection".to_string(),
                    Err(e) => break e,
                };
                last_rx = Instant::now();
                if let Err(e) = handle_frame(dpid, conn_id, &frame, &mut pending, wtx, ctx).await {
                    break e;
                }
            }
            cmd = cmd_rx.recv() => match cmd {
                Some(CommandBox(Command::Send(b))) => {
                    if wtx.send(b).await.is_err() { break "writer gone".to_string(); }
                }
                Some(CommandBox(Command::Request { xid, bytes, deadline, ingest, reply })) => {
                    pending.insert(xid, Pending { reply, ingest, parts: Vec::new(), bytes: 0, deadline });
                    if wtx.send(bytes).await.is_err() { break "writer gone".to_string(); }
                }
                Some(CommandBox(Command::Close)) | None => break "closed by controller".to_string(),
            },
            _ = tick.tick() => {
                let now = Instant::now();
                let quiet = now.saturating_duration_since(last_rx);
                if quiet > echo * 3 {
                    break format!("peer silent for {quiet:?} (dead)");
                }
                if quiet >= echo && now.saturating_duration_since(last_echo_sent) >= echo {
                    echo_xid = echo_xid.wrapping_add(1) | 0x8000_0000;
                    last_echo_sent = now;
                    if wtx.send(encode(echo_xid, Message::EchoRequest(Vec::new()))).await.is_err() {
                        break "writer gone".to_string();
                    }
                }
                let expired: Vec<u32> = pending.iter().filter(|(_, p)| p.deadline <= now).map(|(x, _)| *x).collect();
                for x in expired {
                    if let Some(p) = pending.remove(&x) {
                        debug!(dpid = %dpid_s, xid = x, "request timed out");
                        let _ = p.reply.send(Err(OfError::Timeout { dpid, after: Duration::ZERO }));
                    }
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break "controller shutting down".to_string(); }
            }
        }
    };
    for (_, p) in pending.drain() {
        let _ = p.reply.send(Err(OfError::Disconnected { dpid }));
    }
    reason
}

fn ingest_flows(dpid: u64, ctx: &ConnContext, parts: &[Vec<u8>]) -> Result<Reply, OfError> {
    let now = std::time::Instant::now();
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

/// Handles one framed message. Err ends the connection.
async fn handle_frame(
    dpid: u64,
    conn_id: u64,
    frame: &[u8],
    pending: &mut HashMap<u32, Pending>,
    wtx: &mpsc::Sender<Vec<u8>>,
    ctx: &ConnContext,
) -> Result<(), String> {
    let hdr = ofp::Header::parse(frame).map_err(|e| e.to_string())?;
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
            p.parts.push(frame.to_vec());
            if flags & MPF_MORE == 0 {
                if let Some(p) = pending.remove(&hdr.xid) {
                    let r = if p.ingest {
                        ingest_flows(dpid, ctx, &p.parts)
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
                let _ = wtx.send(encode(hdr.xid, Message::Error(err))).await;
            }
            return Ok(());
        }
    };
    let xid = msg.xid;
    match msg.body {
        Message::EchoRequest(d) => {
            let _ = wtx.send(encode(xid, Message::EchoReply(d))).await;
        }
        Message::EchoReply(_) => {}
        Message::PacketIn(p) => {
            if ctx
                .events
                .try_send(SwitchEvent::PacketIn {
                    dpid,
                    conn_id,
                    msg: p,
                })
                .is_err()
            {
                ctx.packet_in_drops.fetch_add(1, Ordering::Relaxed);
            }
        }
        Message::PortStatus(p) => {
            let _ = ctx
                .events
                .send(SwitchEvent::PortStatus {
                    dpid,
                    conn_id,
                    msg: p,
                })
                .await;
        }
        Message::FlowRemoved(fr) => {
            if let Ok(mut m) = ctx.monitor.lock() {
                m.flow_removed(dpid, &fr);
            }
            let _ = ctx
                .events
                .send(SwitchEvent::FlowRemoved { dpid, msg: fr })
                .await;
        }
        Message::Error(e) => {
            if let Some(p) = pending.remove(&xid) {
                let _ = p.reply.send(Err(OfError::Rejected { dpid, error: e }));
            } else {
                warn!(dpid = %format!("{dpid:016x}"), xid, error = ?e.kind, "switch reported an error");
                let _ = ctx
                    .events
                    .send(SwitchEvent::Error { dpid, xid, msg: e })
                    .await;
            }
        }
        body => {
            if let Some(p) = pending.remove(&xid) {
                let _ = p.reply.send(Ok(Reply::Single(OfpMessage { xid, body })));
            } else {
                debug!(dpid = %format!("{dpid:016x}"), msg = body.name(), xid, "unsolicited message ignored");
            }
        }
    }
    Ok(())
}
