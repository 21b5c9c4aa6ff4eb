//! Reservation writes for switches another node masters.
//!
//! A switch refuses writes from a node that holds it as slave, so the
//! leader cannot install a migration's meters and flows on a switch another
//! node masters. It hands them to that switch's master through etcd:
//!
//! 1. the leader writes `P/relay/req/DPID/ID` — the batch (OpenFlow
//!    messages, hex) and its leader key's create revision — in a
//!    transaction conditioned on that leader key (a deposed leader writes
//!    nothing), under its own lease (the request vanishes with the leader);
//! 2. the node that masters `DPID` (granted by the switch) checks the
//!    request: from the current leader, at most [`MAX_MSGS`] messages, each
//!    decoding and each a reservation write (METER_MOD, or a FLOW_MOD whose
//!    cookie — and, for modify/delete, cookie mask — stays in Shoal's
//!    migration range; BARRIER); it sends the batch with a BARRIER, then
//!    replaces the request by `P/relay/ack/DPID/ID` (`ok` or the error);
//! 3. the leader reads the answer and deletes it.
//!
//! Nothing from etcd becomes anything but these checked OpenFlow messages
//! to the one switch named by the key, and only on a switch this node
//! masters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use ofp::{FlowModCommand, Message, OfpMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, OnceCell};
use tracing::{debug, info, warn};

use crate::cluster::etcd::{connect, ClusterError, PutFollower};
use crate::config::ClusterSettings;
use crate::knowledge::cluster::Fence;
use crate::knowledge::state::Knowledge;
use crate::monitor::cookie::{MIGRATION_MASK, MIGRATION_VALUE};
use crate::monitor::dpid::dpid_str;

/// Messages in one relayed batch at most.
pub const MAX_MSGS: usize = 256;
/// Bytes of one relayed message at most.
pub const MAX_MSG_BYTES: usize = 64 * 1024;
/// How long the leader waits for the master's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    /// The leader's node id (for logs).
    leader: String,
    /// Create revision of the leader's election key.
    leader_rev: i64,
    /// The messages, each one encoded OpenFlow message in hex.
    msgs: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
}

fn req_prefix(root: &str) -> String {
    format!("{root}/relay/req/")
}

fn ack_key(root: &str, dpid: u64, id: &str) -> String {
    format!("{root}/relay/ack/{dpid:016x}/{id}")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 2 * MAX_MSG_BYTES {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether a relayed batch holds only reservation writes (see the module
/// documentation); the error names the first message refused.
pub fn check_batch(msgs: &[Message]) -> Result<(), String> {
    if msgs.len() > MAX_MSGS {
        return Err(format!("{} messages; at most {MAX_MSGS}", msgs.len()));
    }
    for (i, m) in msgs.iter().enumerate() {
        match m {
            Message::MeterMod(_) | Message::BarrierRequest => {}
            Message::FlowMod(f) => {
                if f.cookie & MIGRATION_MASK != MIGRATION_VALUE {
                    return Err(format!(
                        "message {i}: FLOW_MOD cookie {:#018x} is outside the migration range",
                        f.cookie
                    ));
                }
                if f.command != FlowModCommand::Add
                    && f.cookie_mask & MIGRATION_MASK != MIGRATION_MASK
                {
                    return Err(format!(
                        "message {i}: FLOW_MOD {:?} with cookie mask {:#018x} could reach flows outside the migration range",
                        f.command, f.cookie_mask
                    ));
                }
            }
            other => {
                return Err(format!(
                    "message {i}: {} is not a reservation write",
                    other.name()
                ))
            }
        }
    }
    Ok(())
}

/// The leader's side: sends batches to the masters of other switches.
pub struct Relay {
    cfg: ClusterSettings,
    fence: Fence,
    client: OnceCell<Client>,
    seq: AtomicU64,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("node", &self.cfg.node_id)
            .finish()
    }
}

impl Relay {
    /// A relay for the node of `cfg`, acting while `fence` says it leads.
    pub fn new(cfg: ClusterSettings, fence: Fence) -> Self {
        Relay {
            cfg,
            fence,
            client: OnceCell::new(),
            seq: AtomicU64::new(0),
        }
    }

    async fn client(&self) -> Result<Client, String> {
        self.client
            .get_or_try_init(|| connect(&self.cfg))
            .await
            .cloned()
            .map_err(|e| e.to_string())
    }

    /// Has the master of `dpid` send `msgs` (with a BARRIER) and waits for
    /// its answer.
    pub async fn call(&self, dpid: u64, msgs: Vec<Message>) -> Result<(), String> {
        self.fence.may_lead().map_err(|e| e.to_string())?;
        let view = self.fence.view().ok_or("not a cluster node")?;
        let (lkey, lrev) = view.leader_key.clone().ok_or("no leader key")?;
        check_batch(&msgs)?;
        let mut encoded = Vec::with_capacity(msgs.len());
        for (i, m) in msgs.into_iter().enumerate() {
            let mut out = Vec::new();
            OfpMessage::new(i as u32 + 1, m)
                .encode(&mut out)
                .map_err(|e| format!("cannot encode: {e}"))?;
            encoded.push(hex(&out));
        }
        let body = serde_json::to_vec(&Request {
            leader: view.node_id.clone(),
            leader_rev: lrev,
            msgs: encoded,
        })
        .map_err(|e| e.to_string())?;
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{}-{n}", view.node_id, std::process::id());
        let root = &self.cfg.prefix;
        let req = format!("{}{dpid:016x}/{id}", req_prefix(root));
        let ack = ack_key(root, dpid, &id);
        let mut c = self.client().await?;
        let opts = (view.lease_id != 0).then(|| PutOptions::new().with_lease(view.lease_id));
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                lkey.into_bytes(),
                CompareOp::Equal,
                lrev,
            )])
            .and_then(vec![TxnOp::put(req.clone(), body, opts)]);
        let r = tokio::time::timeout(ANSWER_TIMEOUT, c.txn(txn))
            .await
            .map_err(|_| "etcd did not answer".to_string())?
            .map_err(|e| e.to_string())?;
        if !r.succeeded() {
            return Err("this node's leader key is gone: not sent".into());
        }
        let rev = r.header().map(|h| h.revision()).unwrap_or(0);
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let answer = self.wait_answer(&mut c, &ack, rev + 1, deadline).await;
        // Whatever happened, leave nothing behind.
        let _ = tokio::time::timeout(Duration::from_secs(1), c.delete(req, None)).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), c.delete(ack, None)).await;
        let a = answer?;
        if a.ok {
            Ok(())
        } else {
            Err(a.error.unwrap_or_else(|| "refused".into()))
        }
    }

    async fn wait_answer(
        &self,
        c: &mut Client,
        ack: &str,
        from_rev: i64,
        deadline: Instant,
    ) -> Result<Answer, String> {
        let left = || deadline.saturating_duration_since(Instant::now());
        let mut ws = tokio::time::timeout(
            left(),
            c.watch(ack, Some(WatchOptions::new().with_start_revision(from_rev))),
        )
        .await
        .map_err(|_| "no answer from the switch's master".to_string())?
        .map_err(|e| e.to_string())?;
        loop {
            let m = tokio::time::timeout(left(), ws.message())
                .await
                .map_err(|_| "no answer from the switch's master".to_string())?
                .map_err(|e| e.to_string())?
                .ok_or("watch ended")?;
            for ev in m.events() {
                if ev.event_type() == EventType::Put {
                    if let Some(kv) = ev.kv() {
                        return serde_json::from_slice(kv.value())
                            .map_err(|e| format!("bad answer: {e}"));
                    }
                }
            }
        }
    }
}

/// The masters' side: serves the requests for the switches this node
/// masters until shutdown.
pub async fn serve(
    knowledge: Arc<Knowledge>,
    cfg: ClusterSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let r = tokio::select! {
            r = serve_once(&knowledge, &cfg) => r,
            _ = shutdown.changed() => if *shutdown.borrow() { return } else { continue },
        };
        if let Err(e) = r {
            debug!(error = %e, "relay: starting again");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => if *shutdown.borrow() { return },
        }
    }
}

async fn serve_once(knowledge: &Knowledge, cfg: &ClusterSettings) -> Result<(), ClusterError> {
    let mut c = connect(cfg).await?;
    let (kvs, mut follower) = PutFollower::start(&mut c, &req_prefix(&cfg.prefix)).await?;
    for kv in &kvs {
        handle(knowledge, cfg, &mut c, kv).await;
    }
    while let Some(puts) = follower.next().await? {
        for kv in &puts {
            handle(knowledge, cfg, &mut c, kv).await;
        }
    }
    Ok(())
}

/// One request: served when this node masters its switch, else left to
/// the master.
async fn handle(
    knowledge: &Knowledge,
    cfg: &ClusterSettings,
    c: &mut Client,
    kv: &etcd_client::KeyValue,
) {
    let Ok(key) = kv.key_str() else { return };
    let Some(rest) = key.strip_prefix(&req_prefix(&cfg.prefix)) else {
        return;
    };
    let Some((d, id)) = rest.split_once('/') else {
        return;
    };
    let Ok(dpid) = u64::from_str_radix(d, 16) else {
        return;
    };
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return;
    }
    let granted = knowledge
        .granted_masters
        .lock()
        .map(|g| g.contains(&dpid))
        .unwrap_or(false);
    if !granted || knowledge.fence.master_generation(dpid).is_none() {
        return;
    }
    let result = serve_request(knowledge, dpid, kv.value()).await;
    match &result {
        Ok(n) => {
            info!(dpid = %dpid_str(dpid), messages = n, "relay: reservation writes of the leader sent")
        }
        Err(e) => warn!(dpid = %dpid_str(dpid), error = %e, "relay: request refused"),
    }
    let answer = Answer {
        ok: result.is_ok(),
        error: result.err(),
    };
    let Ok(body) = serde_json::to_vec(&answer) else {
        return;
    };
    let opts = (kv.lease() != 0).then(|| PutOptions::new().with_lease(kv.lease()));
    let txn = Txn::new().and_then(vec![
        TxnOp::delete(key, None),
        TxnOp::put(ack_key(&cfg.prefix, dpid, id), body, opts),
    ]);
    if let Err(e) = tokio::time::timeout(Duration::from_secs(2), c.txn(txn)).await {
        debug!(error = %e, "relay: answer not written");
    }
}

async fn serve_request(knowledge: &Knowledge, dpid: u64, value: &[u8]) -> Result<usize, String> {
    let req: Request = serde_json::from_slice(value).map_err(|e| format!("bad request: {e}"))?;
    let view = knowledge.fence.view().ok_or("not a cluster node")?;
    let current = view.leader_key.as_ref().map(|(_, r)| *r);
    if current != Some(req.leader_rev) {
        return Err(format!(
            "request of {} under leader revision {} but the leader's is {:?}: stale, refused",
            req.leader, req.leader_rev, current
        ));
    }
    if req.msgs.len() > MAX_MSGS {
        return Err(format!("{} messages; at most {MAX_MSGS}", req.msgs.len()));
    }
    let mut msgs = Vec::with_capacity(req.msgs.len());
    for (i, h) in req.msgs.iter().enumerate() {
        let b = unhex(h).ok_or_else(|| format!("message {i}: not hex or too long"))?;
        let m = OfpMessage::decode(&b).map_err(|e| format!("message {i}: {e}"))?;
        msgs.push(m.body);
    }
    check_batch(&msgs)?;
    let n = msgs.len();
    let h = knowledge
        .switch_handle(dpid)
        .ok_or("switch not connected")?;
    h.send_batch_confirmed(msgs)
        .await
        .map_err(|e| e.to_string())?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ofp::{FlowMod, MeterMod, MeterModCommand};

    fn fm(command: FlowModCommand, cookie: u64, cookie_mask: u64) -> Message {
        Message::FlowMod(FlowMod {
            command,
            cookie,
            cookie_mask,
            ..FlowMod::default()
        })
    }

    #[test]
    fn only_reservation_writes_are_relayed() {
        let mig = MIGRATION_VALUE | 7;
        let meter = Message::MeterMod(MeterMod {
            command: MeterModCommand::Add,
            flags: 0,
            meter_id: 9,
            bands: vec![],
        });
        assert!(check_batch(&[
            meter,
            fm(FlowModCommand::Add, mig, 0),
            Message::BarrierRequest
        ])
        .is_ok());
        assert!(check_batch(&[fm(FlowModCommand::Delete, mig, u64::MAX)]).is_ok());
        // Outside the migration range, or a delete that reaches beyond it.
        assert!(check_batch(&[fm(FlowModCommand::Add, 0x1234, 0)]).is_err());
        assert!(check_batch(&[fm(FlowModCommand::Delete, mig, 0)]).is_err());
        assert!(check_batch(&[fm(FlowModCommand::Modify, mig, MIGRATION_MASK >> 4)]).is_err());
        assert!(check_batch(&[Message::EchoRequest(vec![])]).is_err());
        assert!(check_batch(&vec![Message::BarrierRequest; MAX_MSGS + 1]).is_err());
    }

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xfe, 0xff])),
            Some(vec![0, 1, 0xfe, 0xff])
        );
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"00".repeat(MAX_MSG_BYTES + 1)), None);
    }
}
