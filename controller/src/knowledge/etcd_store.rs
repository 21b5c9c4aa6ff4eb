//! The knowledge store in etcd (v3 API): [`EtcdStore`] implements
//! [`Store`] with the semantics of [`SqliteStore`](super::store::SqliteStore)
//! (one behavioural test suite runs against both), so that the nodes of a
//! cluster share what must survive a restart or a failover.
//!
//! # Key layout
//!
//! Everything lives under `<prefix>/store/` (`P/` below); values are JSON.
//! Records cross the [`Store`] trait as JSON text and are kept as that
//! text (a string field), byte for byte, as SQLite keeps them.
//!
//! | key | value |
//! |---|---|
//! | `P/meta/schema_version` | [`SCHEMA_VERSION`] |
//! | `P/config/<key>` | the configuration value as given |
//! | `P/hosts/reg/<id>` | `{registration, registered_ms}` |
//! | `P/hosts/report/<id>` | `{report, at_ms}` (only for a registered host) |
//! | `P/vms/<name>` | `{host, inventory, updated_ms}` |
//! | `P/placements/all/<id>` | `{id, vm, from_host, to_host, at_ms, reason}` |
//! | `P/placements/by_vm/<vm>/<id>` | the same placement (index by VM) |
//! | `P/decisions/<id>` | `{id, round, at_ms, policy, decision, outcome, count, last_ms}` |
//! | `P/migrations/by_id/<id>` | `{id, vm, state, record, created_ms, updated_ms}` |
//! | `P/migrations/by_created/<created>/<id>` | the same migration (index by creation) |
//! | `P/migrations/finished/<updated>/<id>` | `{id, created_ms}` (finished migrations only) |
//! | `P/reservations/live/<id>` | `{id, migration, kind, target, detail, created_ms, removed_ms}` |
//! | `P/reservations/removed/<id>` | the same, once removed |
//! | `P/audit/<id>` | `{id, at_ms, actor, action, target, detail}` |
//! | `P/seq/<table>` | the last id issued (placements, decisions, reservations, audit) |
//! | `P/changed/<table>` | touched by every write of that history table |
//!
//! Numeric ids are zero-padded to 20 digits and times in keys are
//! order-preserving 20-digit encodings of `i64`, so that key order is id
//! (or time, then id) order: "the newest N" is one ranged read with a
//! limit. A VM name in a key has `%` and `/` percent-encoded.
//!
//! # Transactions
//!
//! Every change is one etcd transaction, so a crash never leaves half of
//! it. A change that depends on what it read (the VM's previous host, the
//! decision to count a repetition on, the next id, a migration's state)
//! reads first and then commits only if what it read is unchanged
//! (`mod_revision` compares), retrying a bounded number of times.
//! [`Store::prune`] reads a consistent snapshot and commits only if no
//! history table changed since (the `P/changed/<table>` keys).
//!
//! The leader's tables (decisions, migrations, reservations) are fenced:
//! with the cluster view given to [`EtcdStore::fence_leader_writes`], every
//! write transaction to them also
//! requires the cluster leader's election key to still have the create
//! revision it had when this node was elected, so a deposed leader's
//! writes fail with [`StoreError::Fenced`] and write nothing (a node that
//! does not lead may not write them at all). The shared tables (config,
//! hosts and their reports, VMs and placements, the audit trail, and
//! pruning) are written by
//! whichever node a host daemon or an operator reached, and are not fenced.
//!
//! # Threading
//!
//! The trait is synchronous. One background thread owns a current-thread
//! tokio runtime and the etcd client; a call sends its work over a channel
//! and waits for the answer (off the tokio worker threads, through
//! [`off_worker`], as [`SqliteStore`](super::store::SqliteStore) does). Every
//! etcd request is bounded by [`CALL_TIMEOUT`] and every call by
//! [`CALL_DEADLINE`]. A request that times out may still have been applied.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, GetResponse, KeyValue,
    SortOrder, SortTarget, TlsOptions, Txn, TxnOp, TxnOpResponse,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::cluster::ClusterView;
use super::history::{AuditQuery, AuditRow, DecisionQuery, MigrationQuery};
use super::store::{
    from_json, off_worker, DecisionRow, Placement, Pruned, ReservationRow, Retention, Store,
    StoreError, TableLimit, COALESCE_WINDOW, SCHEMA_VERSION,
};

/// Longest wait for one etcd request.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for one store call (all its requests and retries).
pub const CALL_DEADLINE: Duration = Duration::from_secs(20);
/// Longest wait for the first connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read-modify-write attempts before a call gives up.
const ATTEMPTS: usize = 32;
/// Operations per transaction level (etcd's default limit is 128); longer
/// lists are nested transactions.
const TXN_OPS: usize = 100;
/// Keys per read when scanning a range (few in tests, so that they
/// exercise the paging).
const PAGE: u64 = if cfg!(test) { 7 } else { 500 };
/// States of a finished migration (the only ones pruned).
const FINISHED: [&str; 3] = ["done", "failed", "cancelled"];

/// The history tables (with a change marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Decisions,
    Placements,
    Migrations,
    Reservations,
    Audit,
}

impl Table {
    const ALL: [Table; 5] = [
        Table::Decisions,
        Table::Placements,
        Table::Migrations,
        Table::Reservations,
        Table::Audit,
    ];

    fn name(self) -> &'static str {
        match self {
            Table::Decisions => "decisions",
            Table::Placements => "placements",
            Table::Migrations => "migrations",
            Table::Reservations => "reservations",
            Table::Audit => "audit",
        }
    }
}

/// A numeric id in a key (key order = id order).
fn pad(id: i64) -> String {
    format!("{id:020}")
}

/// A time in a key: `i64` shifted to `u64`, so that key order = time
/// order for negative times too.
fn ord(t: i64) -> String {
    format!("{:020}", (t as u64) ^ (1u64 << 63))
}

/// A name as one key segment (no `/`).
fn esc(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: to the end of the keyspace.
    vec![0]
}

/// The keys of one store.
#[derive(Debug, Clone)]
struct Keys {
    root: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys {
            root: format!("{}/store/", prefix.trim_end_matches('/')),
        }
    }
    fn k(&self, rest: &str) -> String {
        format!("{}{rest}", self.root)
    }
    fn schema(&self) -> String {
        self.k("meta/schema_version")
    }
    fn config(&self, key: &str) -> String {
        self.k(&format!("config/{key}"))
    }
    fn hosts(&self) -> String {
        self.k("hosts/reg/")
    }
    fn host(&self, id: &str) -> String {
        format!("{}{id}", self.hosts())
    }
    fn reports(&self) -> String {
        self.k("hosts/report/")
    }
    fn report(&self, id: &str) -> String {
        format!("{}{id}", self.reports())
    }
    fn vms(&self) -> String {
        self.k("vms/")
    }
    fn vm(&self, name: &str) -> String {
        format!("{}{name}", self.vms())
    }
    fn seq(&self, t: Table) -> String {
        self.k(&format!("seq/{}", t.name()))
    }
    fn changed(&self, t: Table) -> String {
        self.k(&format!("changed/{}", t.name()))
    }
    fn placements(&self) -> String {
        self.k("placements/all/")
    }
    fn placement(&self, id: i64) -> String {
        format!("{}{}", self.placements(), pad(id))
    }
    fn vm_placements(&self, vm: &str) -> String {
        self.k(&format!("placements/by_vm/{}/", esc(vm)))
    }
    fn vm_placement(&self, vm: &str, id: i64) -> String {
        format!("{}{}", self.vm_placements(vm), pad(id))
    }
    fn decisions(&self) -> String {
        self.k("decisions/")
    }
    fn decision(&self, id: i64) -> String {
        format!("{}{}", self.decisions(), pad(id))
    }
    fn migration(&self, id: &str) -> String {
        self.k(&format!("migrations/by_id/{id}"))
    }
    fn by_created(&self) -> String {
        self.k("migrations/by_created/")
    }
    fn created(&self, created_ms: i64, id: &str) -> String {
        format!("{}{}/{id}", self.by_created(), ord(created_ms))
    }
    fn finished(&self) -> String {
        self.k("migrations/finished/")
    }
    fn finished_at(&self, updated_ms: i64, id: &str) -> String {
        format!("{}{}/{id}", self.finished(), ord(updated_ms))
    }
    fn live(&self) -> String {
        self.k("reservations/live/")
    }
    fn live_one(&self, id: i64) -> String {
        format!("{}{}", self.live(), pad(id))
    }
    fn removed(&self) -> String {
        self.k("reservations/removed/")
    }
    fn removed_one(&self, id: i64) -> String {
        format!("{}{}", self.removed(), pad(id))
    }
    fn audit(&self) -> String {
        self.k("audit/")
    }
    fn audit_one(&self, id: i64) -> String {
        format!("{}{}", self.audit(), pad(id))
    }
}

// ---- host rows, for other nodes -------------------------------------------

/// The key prefix of the host rows of a store under `prefix`
/// (`<prefix>/store/hosts/`): what a cluster node watches to learn the
/// registrations and reports other nodes received.
pub fn hosts_prefix(prefix: &str) -> String {
    format!("{}/store/hosts/", prefix.trim_end_matches('/'))
}

/// A host row as written by [`EtcdStore`], decoded from a watched key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRowChange {
    /// `hosts/reg/<id>`: a registration (JSON text).
    Registration {
        /// Host id.
        id: String,
        /// The registration.
        json: String,
    },
    /// `hosts/report/<id>`: the latest report (JSON text) and when the
    /// node that received it stored it.
    Report {
        /// Host id.
        id: String,
        /// The report.
        json: String,
        /// Unix ms.
        at_ms: i64,
    },
}

/// Decodes a key under [`hosts_prefix`] and its value; None for anything
/// else (or a value that does not decode).
pub fn decode_host_row(prefix: &str, key: &str, value: &[u8]) -> Option<HostRowChange> {
    let rest = key.strip_prefix(&hosts_prefix(prefix))?;
    if let Some(id) = rest.strip_prefix("reg/") {
        let r: HostRow = serde_json::from_slice(value).ok()?;
        return Some(HostRowChange::Registration {
            id: id.to_string(),
            json: r.registration,
        });
    }
    let id = rest.strip_prefix("report/")?;
    let r: ReportRow = serde_json::from_slice(value).ok()?;
    Some(HostRowChange::Report {
        id: id.to_string(),
        json: r.report,
        at_ms: r.at_ms,
    })
}

// ---- records ---------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
struct HostRow {
    registration: String,
    registered_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ReportRow {
    report: String,
    at_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct VmRow {
    host: String,
    inventory: String,
    updated_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct PlacementRow {
    id: i64,
    vm: String,
    from_host: Option<String>,
    to_host: String,
    at_ms: i64,
    reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DecisionRec {
    id: i64,
    round: i64,
    at_ms: i64,
    policy: String,
    decision: String,
    outcome: String,
    count: i64,
    last_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MigrationRow {
    id: String,
    vm: String,
    state: String,
    record: String,
    created_ms: i64,
    updated_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuditRec {
    id: i64,
    at_ms: i64,
    actor: String,
    action: String,
    target: String,
    detail: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct FinishedRef {
    id: String,
    created_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReservationRec {
    id: i64,
    migration: String,
    kind: String,
    target: String,
    detail: String,
    created_ms: i64,
    removed_ms: Option<i64>,
}

/// The decision stored in `kv`.
fn decision_row(kv: &KeyValue) -> Result<DecisionRow, StoreError> {
    let d: DecisionRec = decode("decisions", kv)?;
    Ok(DecisionRow {
        id: d.id,
        round: d.round,
        at_ms: d.at_ms,
        policy: d.policy,
        decision: from_json("decisions", &d.decision)?,
        outcome: d.outcome,
        count: d.count,
        last_ms: d.last_ms,
    })
}

fn is_finished(state: &str) -> bool {
    FINISHED.contains(&state)
}

fn encode<T: Serialize>(table: &'static str, v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Record {
        table,
        message: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(table: &'static str, kv: &KeyValue) -> Result<T, StoreError> {
    serde_json::from_slice(kv.value()).map_err(|e| StoreError::Record {
        table,
        message: format!("{}: {e}", String::from_utf8_lossy(kv.key())),
    })
}

/// The part of `kv`'s key after `prefix`, as text.
fn key_tail(table: &'static str, kv: &KeyValue, prefix: &str) -> Result<String, StoreError> {
    kv.key()
        .strip_prefix(prefix.as_bytes())
        .and_then(|t| std::str::from_utf8(t).ok())
        .map(str::to_string)
        .ok_or_else(|| StoreError::Record {
            table,
            message: format!("unexpected key {}", String::from_utf8_lossy(kv.key())),
        })
}

/// Mod revision of the first key of `g` (0: no key, as etcd compares it).
fn mod_rev(g: &GetResponse) -> i64 {
    g.kvs().first().map_or(0, KeyValue::mod_revision)
}

/// Value and mod revision of a counter (0, 0 when absent).
fn counter(g: &GetResponse) -> Result<(i64, i64), StoreError> {
    match g.kvs().first() {
        None => Ok((0, 0)),
        Some(kv) => Ok((decode::<i64>("seq", kv)?, kv.mod_revision())),
    }
}

/// The `i`-th answer of a read.
fn nth(gets: &[GetResponse], i: usize) -> Result<&GetResponse, StoreError> {
    gets.get(i)
        .ok_or_else(|| StoreError::Etcd(format!("a read answered {} of its parts", gets.len())))
}

fn contended(what: &str) -> StoreError {
    StoreError::Etcd(format!(
        "{what}: the keys kept changing ({ATTEMPTS} attempts); giving up"
    ))
}

fn stopped() -> StoreError {
    StoreError::Etcd("the store's etcd thread has stopped".into())
}

fn limit_of(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `fut` within [`CALL_TIMEOUT`].
async fn within<T>(
    what: &str,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(StoreError::Etcd(format!("{what}: {e}"))),
        Err(_) => Err(StoreError::Etcd(format!(
            "{what}: no answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

/// `ops` as a tree of transactions of at most [`TXN_OPS`] operations each
/// (an inner transaction without conditions always applies its operations).
fn nest(mut ops: Vec<TxnOp>) -> Vec<TxnOp> {
    while ops.len() > TXN_OPS {
        let mut grouped = Vec::with_capacity(ops.len().div_ceil(TXN_OPS));
        let mut it = ops.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<TxnOp> = it.by_ref().take(TXN_OPS).collect();
            grouped.push(TxnOp::txn(Txn::new().and_then(chunk)));
        }
        ops = grouped;
    }
    ops
}

/// The leader key every write requires (see [`EtcdStore::fence_leader_writes`]).
#[derive(Debug, Clone)]
struct Guard {
    key: Vec<u8>,
    rev: i64,
}

/// What a conditional transaction did.
enum Commit {
    /// Applied.
    Done,
    /// A condition (other than the guard) failed: read again.
    Conflict,
}

/// A range read in pages.
struct Scan {
    from: Vec<u8>,
    to: Vec<u8>,
    desc: bool,
    rev: i64,
    max: Option<u64>,
    keys_only: bool,
}

/// Deletions of one prune.
#[derive(Default)]
struct PrunePlan {
    ops: Vec<TxnOp>,
    pruned: Pruned,
}

/// One call's view of the store on the worker thread.
struct Ctx {
    client: Client,
    keys: Arc<Keys>,
    guard: Option<Guard>,
}

impl Ctx {
    // ---- etcd primitives -------------------------------------------------

    async fn get(
        &mut self,
        what: &str,
        key: impl Into<Vec<u8>>,
        opts: GetOptions,
    ) -> Result<GetResponse, StoreError> {
        within(what, self.client.get(key, Some(opts))).await
    }

    /// Several reads at one revision; returns it and the answers in order.
    async fn read(
        &mut self,
        what: &str,
        ops: Vec<TxnOp>,
    ) -> Result<(i64, Vec<GetResponse>), StoreError> {
        let r = within(what, self.client.txn(Txn::new().and_then(ops))).await?;
        let rev = r.header().map_or(0, |h| h.revision());
        let gets = r
            .op_responses()
            .into_iter()
            .filter_map(|o| match o {
                TxnOpResponse::Get(g) => Some(g),
                _ => None,
            })
            .collect();
        Ok((rev, gets))
    }

    /// A write transaction: `ops` when the guard (if any) and `compares`
    /// hold. A failed guard is [`StoreError::Fenced`].
    async fn commit(
        &mut self,
        what: &str,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<Commit, StoreError> {
        let mut when = Vec::with_capacity(compares.len() + 1);
        let mut otherwise = Vec::new();
        if let Some(g) = &self.guard {
            when.push(Compare::create_revision(
                g.key.clone(),
                CompareOp::Equal,
                g.rev,
            ));
            otherwise.push(TxnOp::get(
                g.key.clone(),
                Some(GetOptions::new().with_keys_only()),
            ));
        }
        when.extend(compares);
        let txn = Txn::new().when(when).and_then(nest(ops)).or_else(otherwise);
        let r = within(what, self.client.txn(txn)).await?;
        if r.succeeded() {
            return Ok(Commit::Done);
        }
        if let Some(g) = &self.guard {
            let found = r
                .op_responses()
                .iter()
                .find_map(|o| match o {
                    TxnOpResponse::Get(get) => {
                        Some(get.kvs().first().map_or(0, KeyValue::create_revision))
                    }
                    _ => None,
                })
                .unwrap_or(0);
            if found != g.rev {
                let key = String::from_utf8_lossy(&g.key).into_owned();
                warn!(%key, expected = g.rev, found, what, "knowledge store: write fenced off (this node is no longer the leader it was)");
                return Err(StoreError::Fenced {
                    key,
                    expected: g.rev,
                    found,
                });
            }
        }
        debug!(
            what,
            "knowledge store: etcd keys changed under a write; reading again"
        );
        Ok(Commit::Conflict)
    }

    /// A write transaction without conditions of its own.
    async fn write(&mut self, what: &str, ops: Vec<TxnOp>) -> Result<(), StoreError> {
        match self.commit(what, Vec::new(), ops).await? {
            Commit::Done => Ok(()),
            Commit::Conflict => Err(StoreError::Etcd(format!(
                "{what}: refused without a failed condition"
            ))),
        }
    }

    /// Reads `s` page by page, calling `f` with each key in order; returns
    /// how many were read.
    async fn scan(
        &mut self,
        what: &str,
        s: Scan,
        f: &mut dyn FnMut(&KeyValue) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let (mut lo, mut hi) = (s.from, s.to);
        let mut seen = 0u64;
        loop {
            let want = match s.max {
                Some(m) => m.saturating_sub(seen).min(PAGE),
                None => PAGE,
            };
            if want == 0 || lo >= hi {
                break;
            }
            let mut opts = GetOptions::new()
                .with_range(hi.clone())
                .with_revision(s.rev)
                .with_limit(i64::try_from(want).unwrap_or(i64::MAX));
            if s.desc {
                opts = opts.with_sort(SortTarget::Key, SortOrder::Descend);
            }
            if s.keys_only {
                opts = opts.with_keys_only();
            }
            let r = self.get(what, lo.clone(), opts).await?;
            for kv in r.kvs() {
                f(kv)?;
            }
            seen += r.kvs().len() as u64;
            let Some(last) = r.kvs().last() else { break };
            if !r.more() {
                break;
            }
            if s.desc {
                hi = last.key().to_vec();
            } else {
                lo = last.key().to_vec();
                lo.push(0);
            }
        }
        Ok(seen)
    }

    /// Keys in `[from, to)` at `rev`.
    async fn count(
        &mut self,
        what: &str,
        from: Vec<u8>,
        to: Vec<u8>,
        rev: i64,
    ) -> Result<u64, StoreError> {
        if from >= to {
            return Ok(0);
        }
        let opts = GetOptions::new()
            .with_range(to)
            .with_revision(rev)
            .with_count_only();
        let r = self.get(what, from, opts).await?;
        Ok(u64::try_from(r.count()).unwrap_or(0))
    }

    /// The newest `limit` keys under `prefix` (keys `prefix<id:020>` when
    /// `seq` names the counter of their ids), oldest first.
    async fn newest(
        &mut self,
        what: &str,
        prefix: String,
        seq: Option<String>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lim = limit_of(limit);
        let end = prefix_end(prefix.as_bytes());
        let mut rev = 0;
        if let Some(seq) = seq {
            // Ids are dense: the newest `limit` are the ids up to the
            // counter, unless some of those were pruned.
            let (r, gets) = self.read(what, vec![TxnOp::get(seq, None)]).await?;
            rev = r;
            let (last, _) = counter(nth(&gets, 0)?)?;
            let lo = last.saturating_sub(lim.saturating_sub(1)).max(1);
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_revision(rev)
                .with_limit(lim);
            let mut got = self.get(what, format!("{prefix}{}", pad(lo)), opts).await?;
            if lo == 1 || got.kvs().len() == limit {
                return Ok(got.take_kvs());
            }
        }
        let opts = GetOptions::new()
            .with_range(end)
            .with_revision(rev)
            .with_limit(lim)
            .with_sort(SortTarget::Key, SortOrder::Descend);
        let mut kvs = self.get(what, prefix, opts).await?.take_kvs();
        kvs.reverse();
        Ok(kvs)
    }

    /// Reads the keys in `[from, to)` newest (highest key) first, page by
    /// page at one revision, calling `f` with each until it has accepted
    /// (returned true for) `want` of them or the range is exhausted.
    async fn scan_back(
        &mut self,
        what: &str,
        from: Vec<u8>,
        to: Vec<u8>,
        want: usize,
        f: &mut dyn FnMut(&KeyValue) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let mut hi = to;
        let mut rev = 0;
        let mut taken = 0usize;
        while taken < want && from < hi {
            let opts = GetOptions::new()
                .with_range(hi.clone())
                .with_revision(rev)
                .with_limit(i64::try_from(PAGE).unwrap_or(i64::MAX))
                .with_sort(SortTarget::Key, SortOrder::Descend);
            let r = self.get(what, from.clone(), opts).await?;
            if rev == 0 {
                rev = r.header().map_or(0, |h| h.revision());
            }
            for kv in r.kvs() {
                if f(kv)? {
                    taken += 1;
                    if taken == want {
                        return Ok(());
                    }
                }
            }
            let Some(last) = r.kvs().last() else { break };
            if !r.more() {
                break;
            }
            hi = last.key().to_vec();
        }
        Ok(())
    }

    fn mark(&self, t: Table, what: &str) -> TxnOp {
        TxnOp::put(
            self.keys.changed(t),
            serde_json::Value::from(what).to_string(),
            None,
        )
    }

    // ---- schema ----------------------------------------------------------

    /// Writes the schema version when absent; checks it otherwise.
    async fn check_schema(mut self) -> Result<(), StoreError> {
        let key = self.keys.schema();
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                key.clone(),
                SCHEMA_VERSION.to_string(),
                None,
            )])
            .or_else(vec![TxnOp::get(key, None)]);
        let r = within("schema version", self.client.txn(txn)).await?;
        if r.succeeded() {
            return Ok(());
        }
        let found = r
            .op_responses()
            .iter()
            .find_map(|o| match o {
                TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .map(|kv| serde_json::from_slice::<i64>(kv.value()).unwrap_or(-1)),
                _ => None,
            })
            .unwrap_or(-1);
        if found != SCHEMA_VERSION {
            return Err(StoreError::Version { found });
        }
        Ok(())
    }

    // ---- configuration ---------------------------------------------------

    async fn set_config(mut self, key: String, json: String) -> Result<(), StoreError> {
        let op = TxnOp::put(self.keys.config(&key), json, None);
        self.write("set config", vec![op]).await
    }

    async fn config(mut self, key: String) -> Result<Option<String>, StoreError> {
        let r = self
            .get("read config", self.keys.config(&key), GetOptions::new())
            .await?;
        r.kvs()
            .first()
            .map(|kv| {
                String::from_utf8(kv.value().to_vec()).map_err(|e| StoreError::Record {
                    table: "meta",
                    message: e.to_string(),
                })
            })
            .transpose()
    }

    // ---- hosts and VMs ---------------------------------------------------

    async fn put_host(mut self, id: String, json: String, at_ms: i64) -> Result<(), StoreError> {
        let row = HostRow {
            registration: json,
            registered_ms: at_ms,
        };
        let op = TxnOp::put(self.keys.host(&id), encode("hosts", &row)?, None);
        self.write("put host", vec![op]).await
    }

    /// Latest reports; a report of an unregistered host is dropped (as
    /// SQLite's `UPDATE` of no row).
    async fn put_reports(mut self, rows: Vec<(String, String, i64)>) -> Result<(), StoreError> {
        let mut latest: BTreeMap<String, (String, i64)> = BTreeMap::new();
        for (id, j, at) in rows {
            latest.insert(id, (j, at));
        }
        if latest.is_empty() {
            return Ok(());
        }
        let mut ops = Vec::with_capacity(latest.len());
        for (id, (report, at_ms)) in latest {
            let row = encode("hosts", &ReportRow { report, at_ms })?;
            ops.push(TxnOp::txn(
                Txn::new()
                    .when(vec![Compare::version(
                        self.keys.host(&id),
                        CompareOp::Greater,
                        0,
                    )])
                    .and_then(vec![TxnOp::put(self.keys.report(&id), row, None)]),
            ));
        }
        self.write("put reports", ops).await
    }

    async fn hosts(mut self) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        let (hp, rp) = (self.keys.hosts(), self.keys.reports());
        let (_, gets) = self
            .read(
                "read hosts",
                vec![
                    TxnOp::get(hp.clone(), Some(GetOptions::new().with_prefix())),
                    TxnOp::get(rp.clone(), Some(GetOptions::new().with_prefix())),
                ],
            )
            .await?;
        let mut reports = BTreeMap::new();
        for kv in nth(&gets, 1)?.kvs() {
            let row: ReportRow = decode("hosts", kv)?;
            reports.insert(key_tail("hosts", kv, &rp)?, row.report);
        }
        let mut out = Vec::new();
        for kv in nth(&gets, 0)?.kvs() {
            let id = key_tail("hosts", kv, &hp)?;
            let row: HostRow = decode("hosts", kv)?;
            let report = reports.remove(&id);
            out.push((id, row.registration, report));
        }
        Ok(out)
    }

    async fn put_vm(
        mut self,
        name: String,
        host: String,
        json: String,
        at_ms: i64,
        reason: String,
    ) -> Result<Option<String>, StoreError> {
        let vm_key = self.keys.vm(&name);
        let seq_key = self.keys.seq(Table::Placements);
        for _ in 0..ATTEMPTS {
            let (_, gets) = self
                .read(
                    "read vm",
                    vec![
                        TxnOp::get(vm_key.clone(), None),
                        TxnOp::get(seq_key.clone(), None),
                    ],
                )
                .await?;
            let g = nth(&gets, 0)?;
            let prev = match g.kvs().first() {
                Some(kv) => Some(decode::<VmRow>("vms", kv)?.host),
                None => None,
            };
            let row = VmRow {
                host: host.clone(),
                inventory: json.clone(),
                updated_ms: at_ms,
            };
            let mut compares = vec![Compare::mod_revision(
                vm_key.clone(),
                CompareOp::Equal,
                mod_rev(g),
            )];
            let mut ops = vec![TxnOp::put(vm_key.clone(), encode("vms", &row)?, None)];
            if prev.as_deref() != Some(host.as_str()) {
                let (last, seq_rev) = counter(nth(&gets, 1)?)?;
                let id = last + 1;
                let p = encode(
                    "placements",
                    &PlacementRow {
                        id,
                        vm: name.clone(),
                        from_host: prev.clone(),
                        to_host: host.clone(),
                        at_ms,
                        reason: reason.clone(),
                    },
                )?;
                compares.push(Compare::mod_revision(
                    seq_key.clone(),
                    CompareOp::Equal,
                    seq_rev,
                ));
                ops.push(TxnOp::put(self.keys.placement(id), p.clone(), None));
                ops.push(TxnOp::put(self.keys.vm_placement(&name, id), p, None));
                ops.push(TxnOp::put(seq_key.clone(), id.to_string(), None));
                ops.push(self.mark(Table::Placements, "put vm"));
            }
            if let Commit::Done = self.commit("put vm", compares, ops).await? {
                return Ok(prev);
            }
        }
        Err(contended("put vm"))
    }

    async fn vms(mut self) -> Result<Vec<(String, String, String)>, StoreError> {
        let p = self.keys.vms();
        let r = self
            .get("read vms", p.clone(), GetOptions::new().with_prefix())
            .await?;
        let mut out = Vec::with_capacity(r.kvs().len());
        for kv in r.kvs() {
            let row: VmRow = decode("vms", kv)?;
            out.push((key_tail("vms", kv, &p)?, row.host, row.inventory));
        }
        Ok(out)
    }

    async fn placements(
        mut self,
        vm: Option<String>,
        limit: usize,
    ) -> Result<Vec<Placement>, StoreError> {
        let kvs = match vm {
            None => {
                let (p, s) = (self.keys.placements(), self.keys.seq(Table::Placements));
                self.newest("read placements", p, Some(s), limit).await?
            }
            Some(vm) => {
                let p = self.keys.vm_placements(&vm);
                self.newest("read placements", p, None, limit).await?
            }
        };
        kvs.iter()
            .map(|kv| {
                let r: PlacementRow = decode("placements", kv)?;
                Ok(Placement {
                    vm: r.vm,
                    from_host: r.from_host,
                    to_host: r.to_host,
                    at_ms: r.at_ms,
                    reason: r.reason,
                })
            })
            .collect()
    }

    // ---- decisions -------------------------------------------------------

    /// The decisions an identical new one may be counted on: those with an
    /// id above the newest id minus [`COALESCE_WINDOW`], oldest first.
    async fn decision_window(
        &mut self,
        last: i64,
        rev: i64,
    ) -> Result<Vec<DecisionRec>, StoreError> {
        let p = self.keys.decisions();
        let end = prefix_end(p.as_bytes());
        // Usually the newest decision is the last id issued.
        let lo = last.saturating_sub(COALESCE_WINDOW - 1).max(1);
        let opts = GetOptions::new()
            .with_range(end.clone())
            .with_revision(rev)
            .with_limit(COALESCE_WINDOW);
        let r = self
            .get("read decisions", self.keys.decision(lo), opts)
            .await?;
        let rows = r
            .kvs()
            .iter()
            .map(|kv| decode::<DecisionRec>("decisions", kv))
            .collect::<Result<Vec<_>, _>>()?;
        if rows.last().map(|d| d.id) == Some(last) {
            return Ok(rows);
        }
        // The newest ones were pruned: find the newest there is.
        let opts = GetOptions::new()
            .with_range(end)
            .with_revision(rev)
            .with_limit(COALESCE_WINDOW)
            .with_sort(SortTarget::Key, SortOrder::Descend);
        let r = self.get("read decisions", p, opts).await?;
        let mut rows = r
            .kvs()
            .iter()
            .map(|kv| decode::<DecisionRec>("decisions", kv))
            .collect::<Result<Vec<_>, _>>()?;
        let max = rows.first().map_or(0, |d| d.id);
        rows.retain(|d| d.id > max - COALESCE_WINDOW);
        rows.reverse();
        Ok(rows)
    }

    async fn record_decisions(
        mut self,
        round: i64,
        policy: String,
        rows: Vec<(i64, String, String)>,
    ) -> Result<Vec<i64>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let seq_key = self.keys.seq(Table::Decisions);
        let changed = self.keys.changed(Table::Decisions);
        for _ in 0..ATTEMPTS {
            let (rev, gets) = self
                .read(
                    "read decisions",
                    vec![
                        TxnOp::get(seq_key.clone(), None),
                        TxnOp::get(changed.clone(), None),
                    ],
                )
                .await?;
            let (last, _) = counter(nth(&gets, 0)?)?;
            let changed_rev = mod_rev(nth(&gets, 1)?);
            let mut window = self.decision_window(last, rev).await?;
            let mut next = last.max(window.last().map_or(0, |d| d.id));
            let mut touched: BTreeMap<i64, DecisionRec> = BTreeMap::new();
            let mut ids = Vec::with_capacity(rows.len());
            for (at_ms, j, outcome) in &rows {
                let max = window.last().map_or(0, |d| d.id);
                let hit = window
                    .iter_mut()
                    .rev()
                    .take_while(|d| d.id > max - COALESCE_WINDOW)
                    .find(|d| d.policy == policy && d.decision == *j && d.outcome == *outcome);
                let row = match hit {
                    Some(d) => {
                        d.count += 1;
                        d.last_ms = *at_ms;
                        d.clone()
                    }
                    None => {
                        next += 1;
                        let d = DecisionRec {
                            id: next,
                            round,
                            at_ms: *at_ms,
                            policy: policy.clone(),
                            decision: j.clone(),
                            outcome: outcome.clone(),
                            count: 1,
                            last_ms: *at_ms,
                        };
                        window.push(d.clone());
                        d
                    }
                };
                ids.push(row.id);
                touched.insert(row.id, row);
            }
            let mut ops = Vec::with_capacity(touched.len() + 2);
            for (id, d) in &touched {
                ops.push(TxnOp::put(
                    self.keys.decision(*id),
                    encode("decisions", d)?,
                    None,
                ));
            }
            if next > last {
                ops.push(TxnOp::put(seq_key.clone(), next.to_string(), None));
            }
            ops.push(self.mark(Table::Decisions, "record decision"));
            let compares = vec![Compare::mod_revision(
                changed.clone(),
                CompareOp::Equal,
                changed_rev,
            )];
            if let Commit::Done = self.commit("record decisions", compares, ops).await? {
                return Ok(ids);
            }
        }
        Err(contended("record decisions"))
    }

    async fn set_decision_outcome(mut self, id: i64, outcome: String) -> Result<(), StoreError> {
        let key = self.keys.decision(id);
        for _ in 0..ATTEMPTS {
            let r = self
                .get("read decision", key.clone(), GetOptions::new())
                .await?;
            let Some(kv) = r.kvs().first() else {
                return Ok(());
            };
            let mut d: DecisionRec = decode("decisions", kv)?;
            d.outcome = outcome.clone();
            let compares = vec![Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                kv.mod_revision(),
            )];
            let ops = vec![
                TxnOp::put(key.clone(), encode("decisions", &d)?, None),
                self.mark(Table::Decisions, "set decision outcome"),
            ];
            if let Commit::Done = self.commit("set decision outcome", compares, ops).await? {
                return Ok(());
            }
        }
        Err(contended("set decision outcome"))
    }

    async fn decisions(mut self, limit: usize) -> Result<Vec<DecisionRow>, StoreError> {
        let (p, s) = (self.keys.decisions(), self.keys.seq(Table::Decisions));
        let kvs = self.newest("read decisions", p, Some(s), limit).await?;
        kvs.iter().map(decision_row).collect()
    }

    async fn decision(mut self, id: i64) -> Result<Option<DecisionRow>, StoreError> {
        let r = self
            .get("read decision", self.keys.decision(id), GetOptions::new())
            .await?;
        r.kvs().first().map(decision_row).transpose()
    }

    async fn decisions_query(mut self, q: DecisionQuery) -> Result<Vec<DecisionRow>, StoreError> {
        let limit = q.capped_limit();
        let p = self.keys.decisions();
        let to = match q.before_id {
            Some(b) if b <= 0 => return Ok(Vec::new()),
            Some(b) => self.keys.decision(b).into_bytes(),
            None => prefix_end(p.as_bytes()),
        };
        let mut out = Vec::new();
        self.scan_back("read decisions", p.into_bytes(), to, limit, &mut |kv| {
            let d = decision_row(kv)?;
            let ok = q.below_cursor(d.id)
                && q.matches(d.at_ms, d.last_ms, &d.policy, &d.decision, &d.outcome);
            if ok {
                out.push(d);
            }
            Ok(ok)
        })
        .await?;
        out.reverse();
        Ok(out)
    }

    // ---- migrations ------------------------------------------------------

    /// Inserts or updates a migration; with `expected` (`Some(None)`: no
    /// record; `Some(Some(s))`: a record in state `s`), only when the
    /// stored record matches. Returns whether it wrote.
    async fn put_migration(
        mut self,
        row: MigrationRow,
        expected: Option<Option<String>>,
    ) -> Result<bool, StoreError> {
        let id = row.id.clone();
        let key = self.keys.migration(&id);
        for _ in 0..ATTEMPTS {
            let r = self
                .get("read migration", key.clone(), GetOptions::new())
                .await?;
            let old = match r.kvs().first() {
                Some(kv) => Some(decode::<MigrationRow>("migrations", kv)?),
                None => None,
            };
            if let Some(want) = &expected {
                if old.as_ref().map(|o| o.state.as_str()) != want.as_deref() {
                    return Ok(false);
                }
            }
            let new = match &old {
                // An update keeps the VM and the creation time.
                Some(o) => MigrationRow {
                    vm: o.vm.clone(),
                    created_ms: o.created_ms,
                    ..row.clone()
                },
                None => row.clone(),
            };
            let v = encode("migrations", &new)?;
            let mut ops = vec![
                TxnOp::put(key.clone(), v.clone(), None),
                TxnOp::put(self.keys.created(new.created_ms, &id), v, None),
            ];
            let old_fin = old
                .as_ref()
                .filter(|o| is_finished(&o.state))
                .map(|o| self.keys.finished_at(o.updated_ms, &id));
            let new_fin =
                is_finished(&new.state).then(|| self.keys.finished_at(new.updated_ms, &id));
            if let Some(k) = &old_fin {
                if old_fin != new_fin {
                    ops.push(TxnOp::delete(k.clone(), None));
                }
            }
            if let Some(k) = new_fin {
                let f = FinishedRef {
                    id: id.clone(),
                    created_ms: new.created_ms,
                };
                ops.push(TxnOp::put(k, encode("migrations", &f)?, None));
            }
            ops.push(self.mark(Table::Migrations, "put migration"));
            let compares = vec![Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                mod_rev(&r),
            )];
            if let Commit::Done = self.commit("put migration", compares, ops).await? {
                return Ok(true);
            }
        }
        Err(contended("put migration"))
    }

    async fn migration(mut self, id: String) -> Result<Option<String>, StoreError> {
        let r = self
            .get(
                "read migration",
                self.keys.migration(&id),
                GetOptions::new(),
            )
            .await?;
        match r.kvs().first() {
            Some(kv) => Ok(Some(decode::<MigrationRow>("migrations", kv)?.record)),
            None => Ok(None),
        }
    }

    /// The newest `limit` migrations by creation, of those the ones in
    /// `states`, oldest first (the limit applies before the state filter,
    /// as in SQLite).
    async fn migrations(
        mut self,
        states: Option<Vec<String>>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let p = self.keys.by_created();
        let kvs = self.newest("read migrations", p, None, limit).await?;
        let mut out = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            let m: MigrationRow = decode("migrations", kv)?;
            if states.as_ref().is_none_or(|s| s.contains(&m.state)) {
                out.push(m.record);
            }
        }
        Ok(out)
    }

    async fn migrations_query(mut self, q: MigrationQuery) -> Result<Vec<String>, StoreError> {
        let limit = q.capped_limit();
        let p = self.keys.by_created();
        let to = match &q.before {
            Some(id) => {
                let r = self
                    .get("read migration", self.keys.migration(id), GetOptions::new())
                    .await?;
                match r.kvs().first() {
                    Some(kv) => {
                        let m: MigrationRow = decode("migrations", kv)?;
                        self.keys.created(m.created_ms, &m.id).into_bytes()
                    }
                    None => return Ok(Vec::new()),
                }
            }
            None => prefix_end(p.as_bytes()),
        };
        let mut out = Vec::new();
        self.scan_back("read migrations", p.into_bytes(), to, limit, &mut |kv| {
            let m: MigrationRow = decode("migrations", kv)?;
            let ok = q.matches(&m.vm, &m.state, m.created_ms, &m.record);
            if ok {
                out.push(m.record);
            }
            Ok(ok)
        })
        .await?;
        out.reverse();
        Ok(out)
    }

    // ---- audit -----------------------------------------------------------

    async fn record_audit(mut self, row: AuditRec) -> Result<i64, StoreError> {
        let keys = self.keys.clone();
        self.insert_next(Table::Audit, "record audit", "audit id", &mut |id| {
            let rec = AuditRec { id, ..row.clone() };
            Ok((keys.audit_one(id), encode("audit", &rec)?))
        })
        .await
    }

    /// Inserts one row under the next id of table `t` (its counter and the
    /// row in one transaction, retried while other writers take ids):
    /// `row(id)` gives the row's key and value. Returns the id.
    async fn insert_next(
        &mut self,
        t: Table,
        what: &'static str,
        counter_what: &'static str,
        row: &mut dyn FnMut(i64) -> Result<(String, Vec<u8>), StoreError>,
    ) -> Result<i64, StoreError> {
        let seq_key = self.keys.seq(t);
        for _ in 0..ATTEMPTS {
            let r = self
                .get(counter_what, seq_key.clone(), GetOptions::new())
                .await?;
            let (last, seq_rev) = counter(&r)?;
            let id = last + 1;
            let (key, value) = row(id)?;
            let compares = vec![Compare::mod_revision(
                seq_key.clone(),
                CompareOp::Equal,
                seq_rev,
            )];
            let ops = vec![
                TxnOp::put(seq_key.clone(), id.to_string(), None),
                TxnOp::put(key, value, None),
                self.mark(t, what),
            ];
            if let Commit::Done = self.commit(what, compares, ops).await? {
                return Ok(id);
            }
        }
        Err(contended(what))
    }

    async fn audit(mut self, q: AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        let limit = q.capped_limit();
        let p = self.keys.audit();
        let to = match q.before_id {
            Some(b) if b <= 0 => return Ok(Vec::new()),
            Some(b) => self.keys.audit_one(b).into_bytes(),
            None => prefix_end(p.as_bytes()),
        };
        let mut out = Vec::new();
        self.scan_back("read audit", p.into_bytes(), to, limit, &mut |kv| {
            let a: AuditRec = decode("audit", kv)?;
            let ok = q.below_cursor(a.id) && q.matches(a.at_ms, &a.actor, &a.action, &a.target);
            if ok {
                out.push(AuditRow {
                    id: a.id,
                    at_ms: a.at_ms,
                    actor: a.actor,
                    action: a.action,
                    target: a.target,
                    detail: from_json("audit", &a.detail)?,
                });
            }
            Ok(ok)
        })
        .await?;
        out.reverse();
        Ok(out)
    }

    // ---- reservations ----------------------------------------------------

    async fn add_reservation(mut self, row: ReservationRec) -> Result<i64, StoreError> {
        let keys = self.keys.clone();
        self.insert_next(
            Table::Reservations,
            "add reservation",
            "read reservation id",
            &mut |id| {
                let rec = ReservationRec { id, ..row.clone() };
                Ok((keys.live_one(id), encode("reservations", &rec)?))
            },
        )
        .await
    }

    async fn remove_reservation(mut self, id: i64, at_ms: i64) -> Result<(), StoreError> {
        let key = self.keys.live_one(id);
        for _ in 0..ATTEMPTS {
            let r = self
                .get("read reservation", key.clone(), GetOptions::new())
                .await?;
            let Some(kv) = r.kvs().first() else {
                return Ok(());
            };
            let mut rec: ReservationRec = decode("reservations", kv)?;
            rec.removed_ms = Some(at_ms);
            let compares = vec![Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                kv.mod_revision(),
            )];
            let ops = vec![
                TxnOp::delete(key.clone(), None),
                TxnOp::put(
                    self.keys.removed_one(id),
                    encode("reservations", &rec)?,
                    None,
                ),
                self.mark(Table::Reservations, "remove reservation"),
            ];
            if let Commit::Done = self.commit("remove reservation", compares, ops).await? {
                return Ok(());
            }
        }
        Err(contended("remove reservation"))
    }

    async fn live_reservations(
        mut self,
        migration: Option<String>,
    ) -> Result<Vec<ReservationRow>, StoreError> {
        let r = self
            .get(
                "read reservations",
                self.keys.live(),
                GetOptions::new().with_prefix(),
            )
            .await?;
        let mut out = Vec::new();
        for kv in r.kvs() {
            let rec: ReservationRec = decode("reservations", kv)?;
            if migration.as_ref().is_some_and(|m| *m != rec.migration) {
                continue;
            }
            out.push(ReservationRow {
                id: rec.id,
                migration: rec.migration,
                kind: rec.kind,
                target: rec.target,
                detail: from_json("reservations", &rec.detail)?,
                created_ms: rec.created_ms,
                removed_ms: rec.removed_ms,
            });
        }
        Ok(out)
    }

    // ---- retention -------------------------------------------------------

    /// What `lim` deletes of the rows under `prefix` (keys in id order) at
    /// revision `rev`: among the newest `max_rows`, those whose time (`at`)
    /// is before the cut (returned), and every row below the oldest of
    /// those newest (the boundary returned: `[prefix, boundary)` goes).
    async fn doomed(
        &mut self,
        prefix: &str,
        lim: &TableLimit,
        now_ms: i64,
        rev: i64,
        at: fn(&KeyValue) -> Result<i64, StoreError>,
    ) -> Result<(Vec<KeyValue>, Option<Vec<u8>>), StoreError> {
        let cut = now_ms.saturating_sub(lim.max_age_ms);
        let end = prefix_end(prefix.as_bytes());
        if lim.max_rows == 0 {
            return Ok((Vec::new(), Some(end)));
        }
        let mut aged = Vec::new();
        let mut oldest: Option<Vec<u8>> = None;
        let scan = Scan {
            from: prefix.as_bytes().to_vec(),
            to: end,
            desc: true,
            rev,
            max: Some(lim.max_rows),
            keys_only: false,
        };
        let seen = self
            .scan("prune", scan, &mut |kv| {
                oldest = Some(kv.key().to_vec());
                if at(kv)? < cut {
                    aged.push(kv.clone());
                }
                Ok(())
            })
            .await?;
        let boundary = oldest.filter(|_| seen == lim.max_rows);
        Ok((aged, boundary))
    }

    /// Plans the deletion of what `lim` removes of the rows under `p` (one
    /// key per row, no index): the aged ones among the newest and the whole
    /// range below them; returns how many rows go.
    async fn prune_rows(
        &mut self,
        p: String,
        lim: &TableLimit,
        now_ms: i64,
        rev: i64,
        at: fn(&KeyValue) -> Result<i64, StoreError>,
        plan: &mut PrunePlan,
    ) -> Result<u64, StoreError> {
        let (aged, boundary) = self.doomed(&p, lim, now_ms, rev, at).await?;
        let mut n = aged.len() as u64;
        for kv in aged {
            plan.ops.push(TxnOp::delete(kv.key().to_vec(), None));
        }
        if let Some(b) = boundary {
            let below = self
                .count("prune", p.clone().into_bytes(), b.clone(), rev)
                .await?;
            if below > 0 {
                plan.ops.push(TxnOp::delete(
                    p.into_bytes(),
                    Some(DeleteOptions::new().with_range(b)),
                ));
                n += below;
            }
        }
        Ok(n)
    }

    async fn prune_decisions(
        &mut self,
        lim: &TableLimit,
        now_ms: i64,
        rev: i64,
        plan: &mut PrunePlan,
    ) -> Result<(), StoreError> {
        let p = self.keys.decisions();
        let at: fn(&KeyValue) -> Result<i64, StoreError> =
            |kv| Ok(decode::<DecisionRec>("decisions", kv)?.last_ms);
        let n = self.prune_rows(p, lim, now_ms, rev, at, plan).await?;
        plan.pruned.decisions = usize::try_from(n).unwrap_or(usize::MAX);
        Ok(())
    }

    async fn prune_placements(
        &mut self,
        lim: &TableLimit,
        now_ms: i64,
        rev: i64,
        plan: &mut PrunePlan,
    ) -> Result<(), StoreError> {
        let p = self.keys.placements();
        let at: fn(&KeyValue) -> Result<i64, StoreError> =
            |kv| Ok(decode::<PlacementRow>("placements", kv)?.at_ms);
        let (aged, boundary) = self.doomed(&p, lim, now_ms, rev, at).await?;
        let mut doomed = Vec::new();
        for kv in &aged {
            doomed.push(decode::<PlacementRow>("placements", kv)?);
        }
        if let Some(b) = boundary {
            let scan = Scan {
                from: p.clone().into_bytes(),
                to: b,
                desc: false,
                rev,
                max: None,
                keys_only: false,
            };
            self.scan("prune", scan, &mut |kv| {
                doomed.push(decode::<PlacementRow>("placements", kv)?);
                Ok(())
            })
            .await?;
        }
        for row in &doomed {
            plan.ops
                .push(TxnOp::delete(self.keys.placement(row.id), None));
            plan.ops
                .push(TxnOp::delete(self.keys.vm_placement(&row.vm, row.id), None));
        }
        plan.pruned.placements = doomed.len();
        Ok(())
    }

    async fn prune_migrations(
        &mut self,
        lim: &TableLimit,
        now_ms: i64,
        rev: i64,
        plan: &mut PrunePlan,
    ) -> Result<(), StoreError> {
        let fin = self.keys.finished();
        let end = prefix_end(fin.as_bytes());
        let cut = now_ms.saturating_sub(lim.max_age_ms);
        // Finished migrations in (updated_ms, id) order: those updated
        // before the cut go, and those below the newest `max_rows`.
        let age_bound = format!("{fin}{}", ord(cut)).into_bytes();
        let bound = if lim.max_rows == 0 {
            end
        } else {
            let mut oldest: Option<Vec<u8>> = None;
            let scan = Scan {
                from: fin.clone().into_bytes(),
                to: end,
                desc: true,
                rev,
                max: Some(lim.max_rows),
                keys_only: true,
            };
            let seen = self
                .scan("prune", scan, &mut |kv| {
                    oldest = Some(kv.key().to_vec());
                    Ok(())
                })
                .await?;
            match oldest {
                Some(k) if seen == lim.max_rows => k.max(age_bound),
                _ => age_bound,
            }
        };
        let mut doomed = Vec::new();
        let scan = Scan {
            from: fin.clone().into_bytes(),
            to: bound.clone(),
            desc: false,
            rev,
            max: None,
            keys_only: false,
        };
        self.scan("prune", scan, &mut |kv| {
            doomed.push(decode::<FinishedRef>("migrations", kv)?);
            Ok(())
        })
        .await?;
        if doomed.is_empty() {
            return Ok(());
        }
        plan.ops.push(TxnOp::delete(
            fin.into_bytes(),
            Some(DeleteOptions::new().with_range(bound)),
        ));
        for f in &doomed {
            plan.ops
                .push(TxnOp::delete(self.keys.migration(&f.id), None));
            plan.ops
                .push(TxnOp::delete(self.keys.created(f.created_ms, &f.id), None));
        }
        plan.pruned.migrations = doomed.len();
        Ok(())
    }

    async fn prune_reservations(
        &mut self,
        lim: &TableLimit,
        now_ms: i64,
        rev: i64,
        plan: &mut PrunePlan,
    ) -> Result<(), StoreError> {
        let p = self.keys.removed();
        let at: fn(&KeyValue) -> Result<i64, StoreError> = |kv| {
            let r: ReservationRec = decode("reservations", kv)?;
            Ok(r.removed_ms.unwrap_or(i64::MAX))
        };
        let n = self.prune_rows(p, lim, now_ms, rev, at, plan).await?;
        plan.pruned.reservations = usize::try_from(n).unwrap_or(usize::MAX);
        Ok(())
    }

    async fn prune_audit(
        &mut self,
        lim: &TableLimit,
        now_ms: i64,
        rev: i64,
        plan: &mut PrunePlan,
    ) -> Result<(), StoreError> {
        let p = self.keys.audit();
        let at: fn(&KeyValue) -> Result<i64, StoreError> =
            |kv| Ok(decode::<AuditRec>("audit", kv)?.at_ms);
        let n = self.prune_rows(p, lim, now_ms, rev, at, plan).await?;
        plan.pruned.audit = usize::try_from(n).unwrap_or(usize::MAX);
        Ok(())
    }

    async fn prune(mut self, r: Retention, now_ms: i64) -> Result<Pruned, StoreError> {
        let marks: Vec<String> = Table::ALL.iter().map(|t| self.keys.changed(*t)).collect();
        for _ in 0..ATTEMPTS {
            let (rev, gets) = self
                .read(
                    "prune",
                    marks.iter().map(|k| TxnOp::get(k.clone(), None)).collect(),
                )
                .await?;
            let mut plan = PrunePlan::default();
            self.prune_decisions(&r.decisions, now_ms, rev, &mut plan)
                .await?;
            self.prune_placements(&r.placements, now_ms, rev, &mut plan)
                .await?;
            self.prune_migrations(&r.migrations, now_ms, rev, &mut plan)
                .await?;
            self.prune_reservations(&r.reservations, now_ms, rev, &mut plan)
                .await?;
            self.prune_audit(&r.audit, now_ms, rev, &mut plan).await?;
            if plan.ops.is_empty() {
                return Ok(Pruned::default());
            }
            let mut compares = Vec::with_capacity(marks.len());
            for (i, k) in marks.iter().enumerate() {
                compares.push(Compare::mod_revision(
                    k.clone(),
                    CompareOp::Equal,
                    mod_rev(nth(&gets, i)?),
                ));
            }
            let p = plan.pruned;
            let counts = [
                p.decisions,
                p.placements,
                p.migrations,
                p.reservations,
                p.audit,
            ];
            for (t, n) in Table::ALL.iter().zip(counts) {
                if n > 0 {
                    plan.ops.push(self.mark(*t, "prune"));
                }
            }
            if let Commit::Done = self.commit("prune", compares, plan.ops).await? {
                return Ok(p);
            }
        }
        Err(contended("prune"))
    }
}

/// Work for the store's thread.
type Job = Box<dyn FnOnce(Client) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// The knowledge store in etcd (see the module documentation).
pub struct EtcdStore {
    endpoints: Vec<String>,
    keys: Arc<Keys>,
    leader_view: Mutex<Option<watch::Receiver<ClusterView>>>,
    jobs: Option<mpsc::UnboundedSender<Job>>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("keys", &self.keys.root)
            .finish_non_exhaustive()
    }
}

/// The store's thread: connects, then runs the jobs one at a time.
fn run_worker(
    endpoints: Vec<String>,
    tls: Option<TlsOptions>,
    ready: std::sync::mpsc::SyncSender<Result<(), StoreError>>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(StoreError::Etcd(format!("no runtime: {e}"))));
            return;
        }
    };
    rt.block_on(async move {
        let mut opts = ConnectOptions::new().with_connect_timeout(CALL_TIMEOUT);
        if let Some(t) = tls {
            opts = opts.with_tls(t);
        }
        let client =
            match tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(&endpoints, Some(opts)))
                .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    let _ = ready.send(Err(StoreError::Etcd(format!("connect: {e}"))));
                    return;
                }
                Err(_) => {
                    let _ = ready.send(Err(StoreError::Etcd(format!(
                        "connect: no answer within {CONNECT_TIMEOUT:?}"
                    ))));
                    return;
                }
            };
        let _ = ready.send(Ok(()));
        while let Some(job) = jobs.recv().await {
            job(client.clone()).await;
        }
    });
    debug!("knowledge store: etcd thread stopped");
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (URLs; `https://` ones with `tls`)
    /// and opens the store under `<prefix>/store/`, writing its schema
    /// version there when absent and refusing an incompatible one
    /// ([`StoreError::Version`]). Fails when etcd does not answer within
    /// a few seconds.
    pub fn connect(
        endpoints: &[String],
        prefix: &str,
        tls: Option<TlsOptions>,
    ) -> Result<EtcdStore, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Etcd("connect: no endpoints".into()));
        }
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let eps = endpoints.to_vec();
        let worker = std::thread::Builder::new()
            .name("etcd-store".into())
            .spawn(move || run_worker(eps, tls, ready_tx, jobs_rx))
            .map_err(|e| StoreError::Etcd(format!("cannot start the store's thread: {e}")))?;
        // Dropped on an error below: stops and joins the thread.
        let store = EtcdStore {
            endpoints: endpoints.to_vec(),
            keys: Arc::new(Keys::new(prefix)),
            leader_view: Mutex::new(None),
            jobs: Some(jobs_tx),
            worker: Some(worker),
        };
        off_worker(|| ready_rx.recv()).map_err(|_| stopped())??;
        store.call("schema version", |c| c.check_schema())?;
        info!(endpoints = ?store.endpoints, keys = %store.keys.root, "knowledge store: etcd");
        Ok(store)
    }

    /// Fences the leader's tables by this node's cluster view: while it
    /// leads, each write requires its election key as the view shows it
    /// (the key and its create revision, checked by etcd in the write's
    /// transaction); while it does not, each such write is refused
    /// ([`StoreError::Fenced`]). A leader that was paused or cut off, whose
    /// view still says it leads, is refused by etcd: its key is gone. Reads
    /// and the shared tables are never fenced; without a view (a store
    /// outside a cluster node) nothing is.
    pub fn fence_leader_writes(&self, view: watch::Receiver<ClusterView>) {
        *self.leader_view.lock().unwrap_or_else(|e| e.into_inner()) = Some(view);
    }

    /// The guard of a write to the leader's tables.
    fn leader_guard(&self) -> Option<Guard> {
        if let Some(rx) = self
            .leader_view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let v = rx.borrow();
            return Some(match &v.leader_key {
                Some((key, rev)) if v.is_leader => Guard {
                    key: key.clone().into_bytes(),
                    rev: *rev,
                },
                // Not the leader: no key has create revision -1.
                _ => Guard {
                    key: format!("{}not-the-leader/{}", self.keys.root, v.node_id).into_bytes(),
                    rev: -1,
                },
            });
        }
        None
    }

    /// The key prefix everything of this store lives under
    /// (`<prefix>/store/`).
    pub fn key_root(&self) -> &str {
        &self.keys.root
    }

    /// Runs `f` on the store's thread and waits for its answer (off the
    /// tokio worker threads).
    fn call<R, F, Fut>(&self, what: &'static str, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(Ctx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R, StoreError>> + 'static,
    {
        self.call_guarded(what, None, f)
    }

    /// [`EtcdStore::call`] for a write to the leader's tables (fenced: see
    /// [`EtcdStore::fence_leader_writes`]).
    fn call_leader<R, F, Fut>(&self, what: &'static str, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(Ctx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R, StoreError>> + 'static,
    {
        self.call_guarded(what, self.leader_guard(), f)
    }

    fn call_guarded<R, F, Fut>(
        &self,
        what: &'static str,
        guard: Option<Guard>,
        f: F,
    ) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(Ctx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R, StoreError>> + 'static,
    {
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        let keys = self.keys.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move |client| -> Pin<Box<dyn Future<Output = ()>>> {
            Box::pin(async move {
                let ctx = Ctx {
                    client,
                    keys,
                    guard,
                };
                let r = match tokio::time::timeout(CALL_DEADLINE, f(ctx)).await {
                    Ok(r) => r,
                    Err(_) => Err(StoreError::Etcd(format!(
                        "{what}: not done within {CALL_DEADLINE:?}"
                    ))),
                };
                let _ = tx.send(r);
            })
        });
        jobs.send(job).map_err(|_| stopped())?;
        off_worker(|| rx.recv()).map_err(|_| stopped())?
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Closing the queue ends the thread once the jobs queued are done.
        self.jobs = None;
        if let Some(w) = self.worker.take() {
            if off_worker(|| w.join()).is_err() {
                warn!("knowledge store: the etcd thread panicked");
            }
        }
    }
}

impl Store for EtcdStore {
    fn set_config_json(&self, key: &str, json: &str) -> Result<(), StoreError> {
        let (key, json) = (key.to_string(), json.to_string());
        self.call("set config", move |c| c.set_config(key, json))
    }
    fn config_json(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.call("read config", move |c| c.config(key))
    }
    fn put_host_json(&self, id: &str, json: &str, at_ms: i64) -> Result<(), StoreError> {
        let (id, json) = (id.to_string(), json.to_string());
        self.call("put host", move |c| c.put_host(id, json, at_ms))
    }
    fn put_report_json(&self, id: &str, json: &str, at_ms: i64) -> Result<(), StoreError> {
        let rows = vec![(id.to_string(), json.to_string(), at_ms)];
        self.call("put report", move |c| c.put_reports(rows))
    }
    fn put_reports_json(&self, rows: &[(String, String, i64)]) -> Result<(), StoreError> {
        let rows = rows.to_vec();
        self.call("put reports", move |c| c.put_reports(rows))
    }
    fn hosts_json(&self) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        self.call("read hosts", |c| c.hosts())
    }
    fn put_vm_json(
        &self,
        name: &str,
        host: &str,
        json: &str,
        at_ms: i64,
        reason: &str,
    ) -> Result<Option<String>, StoreError> {
        let (name, host, json, reason) = (
            name.to_string(),
            host.to_string(),
            json.to_string(),
            reason.to_string(),
        );
        self.call("put vm", move |c| c.put_vm(name, host, json, at_ms, reason))
    }
    fn vms_json(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        self.call("read vms", |c| c.vms())
    }
    fn placements(&self, vm: Option<&str>, limit: usize) -> Result<Vec<Placement>, StoreError> {
        let vm = vm.map(str::to_string);
        self.call("read placements", move |c| c.placements(vm, limit))
    }
    fn record_decision_json(
        &self,
        round: i64,
        at_ms: i64,
        policy: &str,
        json: &str,
        outcome: &str,
    ) -> Result<i64, StoreError> {
        let rows = vec![(at_ms, json.to_string(), outcome.to_string())];
        let policy = policy.to_string();
        let ids = self.call_leader("record decision", move |c| {
            c.record_decisions(round, policy, rows)
        })?;
        ids.first()
            .copied()
            .ok_or_else(|| StoreError::Etcd("record decision: no id".into()))
    }
    fn record_decisions_json(
        &self,
        round: i64,
        policy: &str,
        rows: &[(i64, String, String)],
    ) -> Result<Vec<i64>, StoreError> {
        let (policy, rows) = (policy.to_string(), rows.to_vec());
        self.call_leader("record decisions", move |c| {
            c.record_decisions(round, policy, rows)
        })
    }
    fn set_decision_outcome(&self, id: i64, outcome: &str) -> Result<(), StoreError> {
        let outcome = outcome.to_string();
        self.call_leader("set decision outcome", move |c| {
            c.set_decision_outcome(id, outcome)
        })
    }
    fn decisions(&self, limit: usize) -> Result<Vec<DecisionRow>, StoreError> {
        self.call("read decisions", move |c| c.decisions(limit))
    }
    fn decision_json(&self, id: i64) -> Result<Option<DecisionRow>, StoreError> {
        self.call("read decision", move |c| c.decision(id))
    }
    fn decisions_query(&self, q: &DecisionQuery) -> Result<Vec<DecisionRow>, StoreError> {
        let q = q.clone();
        self.call("read decisions", move |c| c.decisions_query(q))
    }
    fn migrations_query(&self, q: &MigrationQuery) -> Result<Vec<String>, StoreError> {
        let q = q.clone();
        self.call("read migrations", move |c| c.migrations_query(q))
    }
    fn record_audit_json(
        &self,
        at_ms: i64,
        actor: &str,
        action: &str,
        target: &str,
        detail_json: &str,
    ) -> Result<i64, StoreError> {
        let row = AuditRec {
            id: 0,
            at_ms,
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            detail: detail_json.to_string(),
        };
        self.call("record audit", move |c| c.record_audit(row))
    }
    fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        let q = q.clone();
        self.call("read audit", move |c| c.audit(q))
    }
    fn put_migration_json(
        &self,
        id: &str,
        vm: &str,
        state: &str,
        json: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let row = MigrationRow {
            id: id.to_string(),
            vm: vm.to_string(),
            state: state.to_string(),
            record: json.to_string(),
            created_ms: at_ms,
            updated_ms: at_ms,
        };
        self.call_leader("put migration", move |c| c.put_migration(row, None))
            .map(|_| ())
    }
    fn put_migration_json_if(
        &self,
        id: &str,
        vm: &str,
        expected_state: Option<&str>,
        state: &str,
        json: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let row = MigrationRow {
            id: id.to_string(),
            vm: vm.to_string(),
            state: state.to_string(),
            record: json.to_string(),
            created_ms: at_ms,
            updated_ms: at_ms,
        };
        let expected = Some(expected_state.map(str::to_string));
        self.call_leader("put migration", move |c| c.put_migration(row, expected))
    }
    fn migration_json(&self, id: &str) -> Result<Option<String>, StoreError> {
        let id = id.to_string();
        self.call("read migration", move |c| c.migration(id))
    }
    fn migrations_json(
        &self,
        states: Option<&[&str]>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let states = states.map(|s| s.iter().map(|x| x.to_string()).collect());
        self.call("read migrations", move |c| c.migrations(states, limit))
    }
    fn add_reservation_json(
        &self,
        migration: &str,
        kind: &str,
        target: &str,
        json: &str,
        at_ms: i64,
    ) -> Result<i64, StoreError> {
        let row = ReservationRec {
            id: 0,
            migration: migration.to_string(),
            kind: kind.to_string(),
            target: target.to_string(),
            detail: json.to_string(),
            created_ms: at_ms,
            removed_ms: None,
        };
        self.call_leader("add reservation", move |c| c.add_reservation(row))
    }
    fn remove_reservation(&self, id: i64, at_ms: i64) -> Result<(), StoreError> {
        self.call_leader("remove reservation", move |c| {
            c.remove_reservation(id, at_ms)
        })
    }
    fn live_reservations(
        &self,
        migration: Option<&str>,
    ) -> Result<Vec<ReservationRow>, StoreError> {
        let migration = migration.map(str::to_string);
        self.call("read reservations", move |c| c.live_reservations(migration))
    }
    fn prune(&self, r: &Retention, now_ms: i64) -> Result<Pruned, StoreError> {
        let r = *r;
        self.call("prune", move |c| c.prune(r, now_ms))
    }
}

/// A real etcd for the tests: the `etcd` binary as a child process with a
/// data directory of its own and free loopback ports, killed on drop.
#[cfg(test)]
pub(crate) mod test_etcd {
    use std::net::TcpListener;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, Weak};
    use std::time::{Duration, Instant};

    use etcd_client::{Client, GetOptions};

    use super::EtcdStore;

    /// How long a new etcd may take to answer.
    const STARTUP: Duration = Duration::from_secs(30);

    /// A running etcd.
    pub(crate) struct Etcd {
        child: Child,
        dir: PathBuf,
        /// Its client URL.
        pub(crate) url: String,
    }

    fn free_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    /// `name` made unique in this test run.
    fn unique(name: &str) -> String {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        format!("{name}-{}-{n}", std::process::id())
    }

    /// The etcd all tests share while any of them uses it (started again
    /// when the last user dropped it).
    pub(crate) fn shared() -> Arc<Etcd> {
        static SHARED: Mutex<Weak<Etcd>> = Mutex::new(Weak::new());
        let mut w = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = w.upgrade() {
            return e;
        }
        let e = Arc::new(Etcd::start());
        *w = Arc::downgrade(&e);
        e
    }

    impl Etcd {
        /// Starts an etcd of its own and waits (bounded) until it answers.
        pub(crate) fn start() -> Etcd {
            let shm = Path::new("/dev/shm");
            let base = if shm.is_dir() {
                shm.to_path_buf()
            } else {
                std::env::temp_dir()
            };
            let dir = base.join(format!("shoal-{}", unique("etcd")));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let url = format!("http://127.0.0.1:{}", free_port());
            let peer = format!("http://127.0.0.1:{}", free_port());
            let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
            let spawned = Command::new("etcd")
                .arg("--data-dir")
                .arg(dir.join("data"))
                .args(["--listen-client-urls", &url])
                .args(["--advertise-client-urls", &url])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &format!("default={peer}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn();
            let child = match spawned {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let _ = std::fs::remove_dir_all(&dir);
                    panic!(
                        "the `etcd` binary (v3.4+) is not installed or not on PATH: \
                         the EtcdStore tests need a real etcd; install it with \
                         scripts/install-deps.sh (Debian package etcd-server)"
                    )
                }
                Err(e) => panic!("cannot start etcd: {e}"),
            };
            let mut me = Etcd { child, dir, url };
            me.wait_ready();
            me
        }

        fn wait_ready(&mut self) {
            let t = Instant::now();
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("etcd exited ({status}) before answering:\n{}", self.log());
                }
                if EtcdStore::connect(std::slice::from_ref(&self.url), "/shoal-test-probe", None)
                    .is_ok()
                {
                    return;
                }
                assert!(
                    t.elapsed() < STARTUP,
                    "etcd did not answer within {STARTUP:?}:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        fn log(&self) -> String {
            std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
        }

        /// A key prefix no other test uses.
        pub(crate) fn prefix(name: &str) -> String {
            format!("/shoal-test/{}", unique(name))
        }

        /// A store under a prefix of its own.
        pub(crate) fn store(&self, name: &str) -> EtcdStore {
            self.store_at(&Self::prefix(name))
        }

        /// A store under `prefix`.
        pub(crate) fn store_at(&self, prefix: &str) -> EtcdStore {
            EtcdStore::connect(std::slice::from_ref(&self.url), prefix, None).unwrap()
        }

        /// Runs `f` with a client of its own (behind the store's back).
        pub(crate) fn raw<T>(&self, f: impl AsyncFnOnce(&mut Client) -> T) -> T {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut c = Client::connect([self.url.as_str()], None).await.unwrap();
                f(&mut c).await
            })
        }

        /// Puts `key`; returns its create revision.
        pub(crate) fn put(&self, key: &str, value: &[u8]) -> i64 {
            self.raw(async |c| {
                c.put(key, value, None).await.unwrap();
                let r = c.get(key, None).await.unwrap();
                r.kvs()[0].create_revision()
            })
        }

        /// Deletes `key`.
        pub(crate) fn delete(&self, key: &str) {
            self.raw(async |c| {
                c.delete(key, None).await.unwrap();
            })
        }

        /// Every key under `prefix` with its value, in key order.
        pub(crate) fn dump(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
            self.raw(async |c| {
                let r = c
                    .get(prefix, Some(GetOptions::new().with_prefix()))
                    .await
                    .unwrap();
                r.kvs()
                    .iter()
                    .map(|kv| (kv.key_str().unwrap().to_string(), kv.value().to_vec()))
                    .collect()
            })
        }
    }

    impl Drop for Etcd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_rows_decode_for_other_nodes() {
        let reg = serde_json::to_vec(&HostRow {
            registration: "{\"r\":1}".into(),
            registered_ms: 5,
        })
        .unwrap();
        let rep = serde_json::to_vec(&ReportRow {
            report: "{\"s\":2}".into(),
            at_ms: 9,
        })
        .unwrap();
        assert_eq!(
            decode_host_row("/p", "/p/store/hosts/reg/h1", &reg),
            Some(HostRowChange::Registration {
                id: "h1".into(),
                json: "{\"r\":1}".into()
            })
        );
        assert_eq!(
            decode_host_row("/p/", "/p/store/hosts/report/h1", &rep),
            Some(HostRowChange::Report {
                id: "h1".into(),
                json: "{\"s\":2}".into(),
                at_ms: 9
            })
        );
        assert_eq!(decode_host_row("/p", "/p/store/vms/x", &reg), None);
        assert_eq!(
            decode_host_row("/p", "/p/store/hosts/reg/h1", b"junk"),
            None
        );
        assert_eq!(decode_host_row("/q", "/p/store/hosts/reg/h1", &reg), None);
    }

    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::test_etcd::{shared, Etcd};
    use super::*;
    use crate::knowledge::store::StoreExt;

    fn retention(max_rows: u64, max_age_ms: i64) -> Retention {
        let l = TableLimit {
            max_rows,
            max_age_ms,
        };
        Retention {
            decisions: l,
            migrations: l,
            placements: l,
            reservations: l,
            audit: l,
        }
    }

    #[track_caller]
    fn assert_fenced<T: std::fmt::Debug>(r: Result<T, StoreError>, rev: i64, now: i64) {
        match r {
            Err(StoreError::Fenced {
                expected, found, ..
            }) => assert_eq!((expected, found), (rev, now)),
            other => panic!("not fenced: {other:?}"),
        }
    }

    /// Fenced while it leads, every write to the leader's tables needs its
    /// key as the view shows it: once the key is gone or
    /// re-created (a new election), each such write fails with `Fenced` and
    /// changes nothing. The shared tables (written by whichever node a
    /// host daemon reached) are not fenced.
    #[test]
    fn a_fenced_store_writes_nothing_once_the_leader_key_changed() {
        let e = shared();
        let prefix = Etcd::prefix("fence");
        let s = e.store_at(&prefix);
        let key = format!("{prefix}/election/leader");
        let rev1 = e.put(&key, b"n1");
        let lead = |rev: i64| ClusterView {
            node_id: "n1".into(),
            is_leader: true,
            leader_key: Some((key.clone(), rev)),
            ..ClusterView::default()
        };
        let (tx, rx) = watch::channel(lead(rev1));
        s.fence_leader_writes(rx);
        let d = s
            .record_decision(1, 4, "p", &json!({"a": 1}), "dry_run")
            .unwrap();
        s.put_migration("m1", "v1", "queued", &json!({"s": "queued"}), 5)
            .unwrap();
        let r = s
            .add_reservation("m1", "meter", "x", &json!({}), 6)
            .unwrap();
        let before = e.dump(&format!("{prefix}/store/"));

        // A new election: the key is deleted and created again.
        e.delete(&key);
        let rev2 = e.put(&key, b"n2");
        assert_ne!(rev1, rev2);
        assert_fenced(
            s.record_decision(2, 7, "p", &json!({"a": 1}), "dry_run"),
            rev1,
            rev2,
        );
        assert_fenced(
            s.record_decisions_json(2, "p", &[(7, "{}".into(), "x".into())]),
            rev1,
            rev2,
        );
        assert_fenced(s.set_decision_outcome(d, "executed"), rev1, rev2);
        assert_fenced(
            s.put_migration("m1", "v1", "running", &json!({}), 7),
            rev1,
            rev2,
        );
        assert_fenced(
            s.put_migration_if("m1", "v1", Some("queued"), "running", &json!({}), 7),
            rev1,
            rev2,
        );
        assert_fenced(
            s.add_reservation("m1", "flow", "y", &json!({}), 7),
            rev1,
            rev2,
        );
        assert_fenced(s.remove_reservation(r, 7), rev1, rev2);
        assert_eq!(
            e.dump(&format!("{prefix}/store/")),
            before,
            "a fenced write changed something"
        );
        // Reads and the shared tables are not fenced.
        assert_eq!(s.decisions(10).unwrap().len(), 1);
        s.set_config("policy", &json!("b")).unwrap();
        s.put_host("h1", &json!({"cores": 4}), 7).unwrap();
        s.put_report("h1", &json!({"cpu": 2}), 7).unwrap();
        s.put_reports_json(&[("h1".into(), "{}".into(), 8)])
            .unwrap();
        s.put_vm("v1", "h1", &json!({}), 7, "registration").unwrap();
        s.prune(&retention(0, 0), 10).unwrap();

        // The key gone altogether.
        e.delete(&key);
        assert_fenced(s.remove_reservation(r, 9), rev1, 0);

        // The new leader's guard passes; no guard passes.
        let rev3 = e.put(&key, b"n3");
        tx.send_replace(lead(rev3));
        s.put_migration("m1", "v1", "running", &json!({}), 10)
            .unwrap();
        let unfenced = e.store_at(&prefix);
        unfenced
            .put_migration("m1", "v1", "done", &json!({}), 11)
            .unwrap();
        assert_eq!(s.migrations_json(Some(&["done"]), 10).unwrap().len(), 1);
    }

    /// Fenced by the cluster view: the leader writes under its election
    /// key; a node whose view says it does not lead writes nothing to the
    /// leader's tables; a leader whose key is gone (paused past its lease,
    /// cut off) is refused by etcd although its view still says it leads.
    #[test]
    fn the_cluster_view_fences_the_leaders_tables() {
        let e = shared();
        let prefix = Etcd::prefix("viewfence");
        let s = e.store_at(&prefix);
        let key = format!("{prefix}/election/n1");
        let rev = e.put(&key, b"n1");
        let view = |leads: bool| ClusterView {
            node_id: "n1".into(),
            is_leader: leads,
            leader: Some(if leads { "n1" } else { "n2" }.into()),
            leader_key: Some((key.clone(), rev)),
            ..ClusterView::default()
        };
        let (tx, rx) = watch::channel(view(true));
        s.fence_leader_writes(rx);
        s.put_migration("m1", "v1", "running", &json!({}), 1)
            .unwrap();
        // Another node leads.
        tx.send_replace(view(false));
        assert_fenced(s.put_migration("m1", "v1", "failed", &json!({}), 2), -1, 0);
        assert_fenced(s.add_reservation("m1", "meter", "x", &json!({}), 2), -1, 0);
        s.put_host("h1", &json!({}), 2).unwrap();
        // Leads by its view, but its key is gone.
        tx.send_replace(view(true));
        e.delete(&key);
        assert_fenced(s.put_migration("m1", "v1", "failed", &json!({}), 3), rev, 0);
        let m = s.migration_json("m1").unwrap().unwrap_or_default();
        assert!(!m.contains("failed"), "{m}");
        assert_eq!(s.migrations_json(Some(&["running"]), 10).unwrap().len(), 1);
    }

    /// What one writer did: (reservation id, decision id, previous host,
    /// host).
    type Call = (i64, i64, Option<String>, String);

    /// Two stores (two nodes) writing the same keys at once: every
    /// read-modify-write is a compare-and-swap, so nothing is lost.
    #[test]
    fn two_stores_on_one_prefix_lose_no_update() {
        let e = shared();
        let prefix = Etcd::prefix("two");
        let (a, b) = (e.store_at(&prefix), e.store_at(&prefix));
        let per = 20usize;
        let results: Vec<Vec<Call>> = std::thread::scope(|sc| {
            let hs: Vec<_> = [&a, &b, &a, &b]
                .into_iter()
                .enumerate()
                .map(|(t, s)| {
                    sc.spawn(move || {
                        let host = format!("h{t}");
                        (0..per)
                            .map(|i| {
                                let at = (t * per + i) as i64;
                                let r = s
                                    .add_reservation("m", "meter", "x", &json!({"t": t}), at)
                                    .unwrap();
                                let d = s
                                    .record_decision(1, at, "p", &json!({"hold": 1}), "dry_run")
                                    .unwrap();
                                let prev = s.put_vm("v", &host, &json!({}), at, "test").unwrap();
                                (r, d, prev, host.clone())
                            })
                            .collect()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let all: Vec<_> = results.into_iter().flatten().collect();
        let n = all.len();
        let mut rids: Vec<i64> = all.iter().map(|x| x.0).collect();
        rids.sort();
        assert_eq!(rids, (1..=n as i64).collect::<Vec<_>>(), "reservation ids");
        assert_eq!(a.live_reservations(None).unwrap().len(), n);
        let d = b.decisions(10).unwrap();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].count, n as i64);
        // The placement history is one unbroken chain of host changes.
        let changes = all
            .iter()
            .filter(|(_, _, prev, host)| prev.as_deref() != Some(host.as_str()))
            .count();
        let p = a.placements(Some("v"), 1000).unwrap();
        assert_eq!(p.len(), changes);
        assert_eq!(p[0].from_host, None);
        for w in p.windows(2) {
            assert_eq!(w[1].from_host.as_deref(), Some(w[0].to_host.as_str()));
        }
    }

    /// Keys live under `<prefix>/store/` as documented; every value is JSON.
    #[test]
    fn keys_are_under_the_prefix_and_values_are_json() {
        let e = shared();
        let prefix = Etcd::prefix("layout");
        let s = e.store_at(&prefix);
        assert_eq!(s.key_root(), format!("{prefix}/store/"));
        s.set_config("policy", &json!({"name": "idc"})).unwrap();
        s.put_host("h1", &json!({}), 1).unwrap();
        s.put_report("h1", &json!({}), 2).unwrap();
        s.put_vm("a/b", "h1", &json!({}), 3, "registration")
            .unwrap();
        s.record_decision(1, 4, "p", &json!({}), "dry_run").unwrap();
        s.put_migration("m1", "a/b", "done", &json!({}), 5).unwrap();
        let r = s
            .add_reservation("m1", "meter", "x", &json!({}), 6)
            .unwrap();
        s.remove_reservation(r, 7).unwrap();
        let keys: Vec<(String, Vec<u8>)> = e.dump(&format!("{prefix}/"));
        let names: Vec<String> = keys
            .iter()
            .map(|(k, _)| k[prefix.len() + "/store/".len()..].to_string())
            .collect();
        assert!(keys
            .iter()
            .all(|(k, _)| k.starts_with(&format!("{prefix}/store/"))));
        for (k, v) in &keys {
            assert!(
                serde_json::from_slice::<serde_json::Value>(v).is_ok(),
                "{k} is not JSON"
            );
        }
        let expect = [
            "config/policy",
            "decisions/00000000000000000001",
            "hosts/reg/h1",
            "hosts/report/h1",
            "meta/schema_version",
            "migrations/by_id/m1",
            "placements/all/00000000000000000001",
            "placements/by_vm/a%2Fb/00000000000000000001",
            "reservations/removed/00000000000000000001",
            "seq/decisions",
            "seq/placements",
            "seq/reservations",
            "vms/a/b",
        ];
        for k in expect {
            assert!(names.iter().any(|n| n == k), "{k} missing from {names:?}");
        }
        assert!(names
            .iter()
            .any(|n| n.starts_with("migrations/by_created/")));
        assert!(names.iter().any(|n| n.starts_with("migrations/finished/")));
        assert!(!names.iter().any(|n| n.starts_with("reservations/live/")));
    }

    /// Values that are not what the store wrote are errors, never panics.
    #[test]
    fn corrupt_values_are_errors_not_panics() {
        let e = shared();
        let s = e.store("corrupt");
        let root = s.key_root().to_string();
        e.put(&format!("{root}migrations/by_id/x"), b"{not json");
        e.put(
            &format!("{root}migrations/by_created/{}/x", ord(1)),
            b"[1, 2]",
        );
        e.put(&format!("{root}seq/reservations"), b"\"many\"");
        e.put(&format!("{root}decisions/{}", pad(1)), b"\xff\xfe");
        e.put(&format!("{root}vms/v"), b"{}");
        let is_record = |r: Result<_, StoreError>, table: &str| match r {
            Err(StoreError::Record { table: t, .. }) => assert_eq!(t, table),
            other => panic!("not a record error: {other:?}"),
        };
        is_record(s.migration_json("x").map(|_| ()), "migrations");
        is_record(s.migrations_json(None, 10).map(|_| ()), "migrations");
        is_record(
            s.add_reservation("m", "k", "t", &json!({}), 1).map(|_| ()),
            "seq",
        );
        is_record(s.decisions(10).map(|_| ()), "decisions");
        is_record(
            s.record_decision(1, 1, "p", &json!({}), "x").map(|_| ()),
            "decisions",
        );
        is_record(s.vms_json().map(|_| ()), "vms");
        is_record(s.put_vm("v", "h", &json!({}), 1, "r").map(|_| ()), "vms");
    }

    /// A store over a database of another schema version is refused.
    #[test]
    fn another_schema_version_is_refused() {
        let e = shared();
        let prefix = Etcd::prefix("schema");
        e.put(&format!("{prefix}/store/meta/schema_version"), b"99");
        match EtcdStore::connect(std::slice::from_ref(&e.url), &prefix, None) {
            Err(StoreError::Version { found: 99 }) => {}
            other => panic!("{other:?}"),
        }
    }

    /// No etcd, or etcd gone: calls fail within their timeouts instead of
    /// hanging.
    #[test]
    fn an_unreachable_etcd_is_an_error_within_the_timeout() {
        let t = Instant::now();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let r = EtcdStore::connect(&[format!("http://127.0.0.1:{port}")], "/x", None);
        assert!(matches!(r, Err(StoreError::Etcd(_))), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

        let e = Etcd::start();
        let s = e.store("gone");
        s.set_config("k", &1).unwrap();
        drop(e);
        let t = Instant::now();
        let r = s.config_json("k");
        assert!(matches!(r, Err(StoreError::Etcd(_))), "{r:?}");
        let r = s.put_vm_json("v", "h", "{}", 1, "r");
        assert!(matches!(r, Err(StoreError::Etcd(_))), "{r:?}");
        assert!(
            t.elapsed() < CALL_TIMEOUT * 4,
            "calls took {:?}",
            t.elapsed()
        );
        drop(s);
    }

    /// Connected, used and dropped on a tokio worker thread.
    #[test]
    fn a_store_lives_and_dies_on_a_runtime_worker() {
        let e = shared();
        let url = e.url.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let n = rt.block_on(async move {
            tokio::spawn(async move {
                let s = EtcdStore::connect(&[url], &Etcd::prefix("worker"), None).unwrap();
                s.put_host("h", &json!({}), 1).unwrap();
                let n = s.hosts_json().unwrap().len();
                drop(s);
                n
            })
            .await
            .unwrap()
        });
        assert_eq!(n, 1);
    }

    #[test]
    fn key_encodings_keep_order() {
        let ts = [i64::MIN, -5, -1, 0, 1, 7, 1_000, i64::MAX];
        for w in ts.windows(2) {
            assert!(ord(w[0]) < ord(w[1]), "{w:?}");
            assert_eq!(ord(w[0]).len(), 20);
        }
        assert!(pad(9) < pad(10));
        assert_eq!(esc("a/b%c"), "a%2Fb%25c");
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    }

    #[test]
    fn long_operation_lists_are_nested_transactions() {
        let ops: Vec<TxnOp> = (0..25_000)
            .map(|i| TxnOp::delete(format!("k{i}"), None))
            .collect();
        let top = nest(ops);
        assert!(top.len() <= TXN_OPS);
        assert_eq!(top.len(), 3);
    }
}
