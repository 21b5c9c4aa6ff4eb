//! The persistent knowledge store: an embedded SQLite database (rusqlite,
//! bundled) holding what must survive a controller restart — hosts and their
//! latest registration and report, VMs, placement history, decisions,
//! migrations with their state, the reservations made for them, the audit
//! trail of operators' changes, and configuration (the active policy).
//! History is read with filters and pages ([`super::history`]:
//! [`Store::decisions_query`], [`Store::migrations_query`],
//! [`Store::audit`]).
//!
//! Records are stored as JSON in typed tables with the columns that are
//! queried (ids, states, times) broken out. Every write is one statement or
//! one transaction; the database runs in WAL mode, so a `kill -9` loses at
//! most the write in progress.
//!
//! Calls are synchronous. [`SqliteStore`] never runs SQLite on a tokio
//! worker thread: on a multi-threaded runtime each call runs in
//! [`tokio::task::block_in_place`] (the worker hands its other tasks to
//! another thread for the duration of the call), so a slow or locked
//! database delays only the caller, never the core, the API or the
//! pollers. Debug builds assert it.
//!
//! History is bounded ([`Retention`], [`Store::prune`]): decisions,
//! finished migrations, placements, removed reservations and audit entries
//! beyond a row
//! count or an age are deleted; identical repeated decisions are one row
//! with a `count` and the time last seen (`last_ms`).
//!
//! A second backend, [`EtcdStore`](super::etcd_store::EtcdStore), keeps the
//! same records in etcd for a cluster of controllers; both backends pass
//! one behavioural test suite (`store_suite`).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::history::{AuditQuery, AuditRow, DecisionQuery, MigrationQuery};

/// Version of the schema below; bumped on incompatible changes.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hosts (
    id                TEXT PRIMARY KEY,
    registration      TEXT NOT NULL,
    registered_ms     INTEGER NOT NULL,
    last_report       TEXT,
    last_report_ms    INTEGER
);
CREATE TABLE IF NOT EXISTS vms (
    name       TEXT PRIMARY KEY,
    host       TEXT NOT NULL,
    inventory  TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS placements (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    vm        TEXT NOT NULL,
    from_host TEXT,
    to_host   TEXT NOT NULL,
    at_ms     INTEGER NOT NULL,
    reason    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS placements_vm ON placements(vm);
CREATE TABLE IF NOT EXISTS decisions (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    round    INTEGER NOT NULL,
    at_ms    INTEGER NOT NULL,
    policy   TEXT NOT NULL,
    decision TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    count    INTEGER NOT NULL DEFAULT 1,
    last_ms  INTEGER
);
CREATE INDEX IF NOT EXISTS decisions_at ON decisions(at_ms);
CREATE INDEX IF NOT EXISTS placements_at ON placements(at_ms);
CREATE TABLE IF NOT EXISTS migrations (
    id         TEXT PRIMARY KEY,
    vm         TEXT NOT NULL,
    state      TEXT NOT NULL,
    record     TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS migrations_state ON migrations(state);
CREATE TABLE IF NOT EXISTS reservations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    migration  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    target     TEXT NOT NULL,
    detail     TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    removed_ms INTEGER
);
CREATE INDEX IF NOT EXISTS reservations_live ON reservations(removed_ms);
CREATE INDEX IF NOT EXISTS migrations_created ON migrations(created_ms, id);
CREATE TABLE IF NOT EXISTS audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms  INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at_ms);
"#;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("knowledge store: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A stored record is not valid JSON for its type.
    #[error("knowledge store: bad record in {table}: {message}")]
    Record {
        /// Table.
        table: &'static str,
        /// What failed.
        message: String,
    },
    /// The database was written by an incompatible version.
    #[error("knowledge store: schema version {found} (this controller uses {SCHEMA_VERSION})")]
    Version {
        /// Version found.
        found: i64,
    },
    /// The lock was poisoned by a panic elsewhere.
    #[error("knowledge store: lock poisoned")]
    Poisoned,
    /// etcd failed, did not answer in time, or kept changing under a
    /// read-modify-write ([`EtcdStore`](super::etcd_store::EtcdStore)).
    #[error("knowledge store: etcd: {0}")]
    Etcd(String),
    /// A write was refused because its guard failed: the leader key the
    /// store was fenced with ([`EtcdStore::fence_leader_writes`](super::etcd_store::EtcdStore::fence_leader_writes))
    /// is gone or belongs to another election. Nothing was written.
    #[error("knowledge store: write fenced off: {key} is no longer at create revision {expected} (found {found})")]
    Fenced {
        /// The guard key.
        key: String,
        /// Its create revision the store was fenced with.
        expected: i64,
        /// Its create revision now (0: the key is gone).
        found: i64,
    },
}

/// A placement change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// VM name.
    pub vm: String,
    /// Previous host (None: first seen).
    pub from_host: Option<String>,
    /// New host.
    pub to_host: String,
    /// Unix ms.
    pub at_ms: i64,
    /// Why (registration, migration id, ...).
    pub reason: String,
}

/// A stored decision with what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRow {
    /// Row id.
    pub id: i64,
    /// Evaluation round.
    pub round: i64,
    /// Unix ms.
    pub at_ms: i64,
    /// Policy name.
    pub policy: String,
    /// The decision (JSON as the planner produced it).
    pub decision: serde_json::Value,
    /// `executed`, `dry_run`, `queued`, `skipped: …`, …
    pub outcome: String,
    /// How many times this identical decision (policy, decision and
    /// outcome) was made in a row.
    #[serde(default = "one")]
    pub count: i64,
    /// Unix ms of the latest repetition (`at_ms` when made once).
    #[serde(default)]
    pub last_ms: i64,
}

fn one() -> i64 {
    1
}

/// Retention of one history table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableLimit {
    /// Rows kept at most (the newest).
    pub max_rows: u64,
    /// Rows older than this (ms) are deleted.
    pub max_age_ms: i64,
}

/// Retention of every history table ([`Store::prune`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Decisions.
    pub decisions: TableLimit,
    /// Finished migrations (done, failed, cancelled); others are kept.
    pub migrations: TableLimit,
    /// Placement history.
    pub placements: TableLimit,
    /// Removed reservations; those still in place are kept.
    pub reservations: TableLimit,
    /// The operators' audit trail.
    pub audit: TableLimit,
}

/// Rows deleted by one [`Store::prune`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Decisions.
    pub decisions: usize,
    /// Migrations.
    pub migrations: usize,
    /// Placements.
    pub placements: usize,
    /// Reservations.
    pub reservations: usize,
    /// Audit entries.
    pub audit: usize,
}

impl Pruned {
    /// Rows deleted in all.
    pub fn total(&self) -> usize {
        self.decisions + self.migrations + self.placements + self.reservations + self.audit
    }
}

/// Decisions this far back (rows) are looked at for an identical one to
/// coalesce with.
pub(crate) const COALESCE_WINDOW: i64 = 64;

/// A reservation made on a switch or port for a migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReservationRow {
    /// Row id.
    pub id: i64,
    /// Migration id.
    pub migration: String,
    /// `meter`, `flow`, `queue`, ...
    pub kind: String,
    /// Where: a datapath id (16 hex digits) or a port name.
    pub target: String,
    /// Everything needed to remove it again.
    pub detail: serde_json::Value,
    /// Unix ms.
    pub created_ms: i64,
    /// Unix ms of removal (None: still in place).
    pub removed_ms: Option<i64>,
}

/// The knowledge store: what must survive a restart. Records cross the
/// trait as JSON text (so that a backend needs no knowledge of the record
/// types); [`StoreExt`] adds the typed calls every caller uses. The
/// implementations are [`SqliteStore`] and
/// [`EtcdStore`](super::etcd_store::EtcdStore).
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores a configuration value (JSON text) under `key`.
    fn set_config_json(&self, key: &str, json: &str) -> Result<(), StoreError>;
    /// Reads a configuration value (JSON text).
    fn config_json(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Stores a host's registration (replacing the previous one).
    fn put_host_json(&self, id: &str, json: &str, at_ms: i64) -> Result<(), StoreError>;
    /// Stores a host's latest report.
    fn put_report_json(&self, id: &str, json: &str, at_ms: i64) -> Result<(), StoreError>;
    /// Stores the latest reports of several hosts, `(id, report, at_ms)`,
    /// at once (one transaction where the backend has them).
    fn put_reports_json(&self, rows: &[(String, String, i64)]) -> Result<(), StoreError> {
        rows.iter()
            .try_for_each(|(id, j, at)| self.put_report_json(id, j, *at))
    }
    /// All hosts: (id, registration, latest report), by id.
    fn hosts_json(&self) -> Result<Vec<(String, String, Option<String>)>, StoreError>;
    /// Records where a VM is; when the host changed, appends a placement
    /// history entry (atomically). Returns the previous host.
    fn put_vm_json(
        &self,
        name: &str,
        host: &str,
        json: &str,
        at_ms: i64,
        reason: &str,
    ) -> Result<Option<String>, StoreError>;
    /// All VMs: (name, host, inventory), by name.
    fn vms_json(&self) -> Result<Vec<(String, String, String)>, StoreError>;
    /// Placement history, newest last (of one VM, or all), at most `limit`.
    fn placements(&self, vm: Option<&str>, limit: usize) -> Result<Vec<Placement>, StoreError>;
    /// Records a decision and its outcome; returns its id. A decision
    /// identical (policy, decision, outcome) to one of the recent rows is
    /// counted on that row (`count`, `last_ms`) instead of added.
    fn record_decision_json(
        &self,
        round: i64,
        at_ms: i64,
        policy: &str,
        json: &str,
        outcome: &str,
    ) -> Result<i64, StoreError>;
    /// Records the decisions of one round, `(at_ms, decision, outcome)`,
    /// as [`Store::record_decision_json`] does each (in one transaction
    /// where the backend has them); returns their ids in order.
    fn record_decisions_json(
        &self,
        round: i64,
        policy: &str,
        rows: &[(i64, String, String)],
    ) -> Result<Vec<i64>, StoreError> {
        rows.iter()
            .map(|(at, j, outcome)| self.record_decision_json(round, *at, policy, j, outcome))
            .collect()
    }
    /// Updates a decision's outcome.
    fn set_decision_outcome(&self, id: i64, outcome: &str) -> Result<(), StoreError>;
    /// The most recent decisions, newest last.
    fn decisions(&self, limit: usize) -> Result<Vec<DecisionRow>, StoreError>;
    /// One decision by its id (None: no such row, or pruned).
    fn decision_json(&self, id: i64) -> Result<Option<DecisionRow>, StoreError>;
    /// The newest decisions matching `q` (see [`DecisionQuery`]), at most
    /// its limit (capped at [`MAX_LIMIT`](super::history::MAX_LIMIT)),
    /// newest last.
    fn decisions_query(&self, q: &DecisionQuery) -> Result<Vec<DecisionRow>, StoreError>;
    /// Inserts or updates a migration record.
    fn put_migration_json(
        &self,
        id: &str,
        vm: &str,
        state: &str,
        json: &str,
        at_ms: i64,
    ) -> Result<(), StoreError>;
    /// Compare-and-set of a migration record: inserts or updates it as
    /// [`Store::put_migration_json`] does, but only when the stored record's
    /// state is `expected_state` (`None`: only when there is no record
    /// with this id). Returns whether it wrote; the check and the write
    /// are one transaction.
    fn put_migration_json_if(
        &self,
        id: &str,
        vm: &str,
        expected_state: Option<&str>,
        state: &str,
        json: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError>;
    /// One migration record.
    fn migration_json(&self, id: &str) -> Result<Option<String>, StoreError>;
    /// Migration records, oldest first; only those in `states` when given.
    fn migrations_json(
        &self,
        states: Option<&[&str]>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// The newest migration records matching `q` (see [`MigrationQuery`]),
    /// at most its limit (capped), oldest first, as JSON text.
    fn migrations_query(&self, q: &MigrationQuery) -> Result<Vec<String>, StoreError>;
    /// Records an operator's change in the audit trail; returns its id.
    /// `detail_json` is JSON text.
    fn record_audit_json(
        &self,
        at_ms: i64,
        actor: &str,
        action: &str,
        target: &str,
        detail_json: &str,
    ) -> Result<i64, StoreError>;
    /// The newest audit entries matching `q` (see [`AuditQuery`]), at most
    /// its limit (capped), oldest first.
    fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditRow>, StoreError>;
    /// Records a reservation; returns its id (record it *before* installing
    /// it, so that a crash in between leaves a row to clean up).
    fn add_reservation_json(
        &self,
        migration: &str,
        kind: &str,
        target: &str,
        json: &str,
        at_ms: i64,
    ) -> Result<i64, StoreError>;
    /// Marks a reservation removed.
    fn remove_reservation(&self, id: i64, at_ms: i64) -> Result<(), StoreError>;
    /// Reservations still in place (of one migration, or all).
    fn live_reservations(&self, migration: Option<&str>)
        -> Result<Vec<ReservationRow>, StoreError>;
    /// Deletes history beyond `r` at `now_ms` (see [`Retention`]).
    fn prune(&self, r: &Retention, now_ms: i64) -> Result<Pruned, StoreError>;
}

/// The typed calls on any [`Store`] (records as JSON of `T`).
pub trait StoreExt: Store {
    /// Stores a configuration value under `key`.
    fn set_config<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.set_config_json(key, &to_json("meta", value)?)
    }
    /// Reads a configuration value.
    fn config<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.config_json(key)?
            .map(|s| from_json("meta", &s))
            .transpose()
    }
    /// Stores a host's registration (replacing the previous one).
    fn put_host<T: Serialize>(
        &self,
        id: &str,
        registration: &T,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.put_host_json(id, &to_json("hosts", registration)?, at_ms)
    }
    /// Stores a host's latest report.
    fn put_report<T: Serialize>(&self, id: &str, report: &T, at_ms: i64) -> Result<(), StoreError> {
        self.put_report_json(id, &to_json("hosts", report)?, at_ms)
    }
    /// All hosts: (id, registration, latest report).
    #[allow(clippy::type_complexity)]
    fn hosts<R: DeserializeOwned, P: DeserializeOwned>(
        &self,
    ) -> Result<Vec<(String, R, Option<P>)>, StoreError> {
        let mut out = Vec::new();
        for (id, reg, rep) in self.hosts_json()? {
            out.push((
                id,
                from_json("hosts", &reg)?,
                rep.map(|s| from_json("hosts", &s)).transpose()?,
            ));
        }
        Ok(out)
    }
    /// Records where a VM is (see [`Store::put_vm_json`]).
    fn put_vm<T: Serialize>(
        &self,
        name: &str,
        host: &str,
        inventory: &T,
        at_ms: i64,
        reason: &str,
    ) -> Result<Option<String>, StoreError> {
        self.put_vm_json(name, host, &to_json("vms", inventory)?, at_ms, reason)
    }
    /// All VMs: (name, host, inventory).
    fn vms<T: DeserializeOwned>(&self) -> Result<Vec<(String, String, T)>, StoreError> {
        let mut out = Vec::new();
        for (n, h, inv) in self.vms_json()? {
            out.push((n, h, from_json("vms", &inv)?));
        }
        Ok(out)
    }
    /// Records a decision and its outcome; returns its id.
    fn record_decision<T: Serialize>(
        &self,
        round: i64,
        at_ms: i64,
        policy: &str,
        decision: &T,
        outcome: &str,
    ) -> Result<i64, StoreError> {
        self.record_decision_json(
            round,
            at_ms,
            policy,
            &to_json("decisions", decision)?,
            outcome,
        )
    }
    /// Inserts or updates a migration record.
    fn put_migration<T: Serialize>(
        &self,
        id: &str,
        vm: &str,
        state: &str,
        record: &T,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.put_migration_json(id, vm, state, &to_json("migrations", record)?, at_ms)
    }
    /// Compare-and-set of a migration record (see
    /// [`Store::put_migration_json_if`]); returns whether it wrote.
    fn put_migration_if<T: Serialize>(
        &self,
        id: &str,
        vm: &str,
        expected_state: Option<&str>,
        state: &str,
        record: &T,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        self.put_migration_json_if(
            id,
            vm,
            expected_state,
            state,
            &to_json("migrations", record)?,
            at_ms,
        )
    }
    /// One migration.
    fn migration<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>, StoreError> {
        self.migration_json(id)?
            .map(|s| from_json("migrations", &s))
            .transpose()
    }
    /// Migrations, oldest first; only those in `states` when given.
    fn migrations<T: DeserializeOwned>(
        &self,
        states: Option<&[&str]>,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        self.migrations_json(states, limit)?
            .iter()
            .map(|s| from_json("migrations", s))
            .collect()
    }
    /// The migrations matching `q`, oldest first (see
    /// [`Store::migrations_query`]).
    fn migrations_matching<T: DeserializeOwned>(
        &self,
        q: &MigrationQuery,
    ) -> Result<Vec<T>, StoreError> {
        self.migrations_query(q)?
            .iter()
            .map(|s| from_json("migrations", s))
            .collect()
    }
    /// Records an operator's change in the audit trail; returns its id.
    fn record_audit<T: Serialize>(
        &self,
        at_ms: i64,
        actor: &str,
        action: &str,
        target: &str,
        detail: &T,
    ) -> Result<i64, StoreError> {
        self.record_audit_json(at_ms, actor, action, target, &to_json("audit", detail)?)
    }
    /// Records a reservation; returns its id.
    fn add_reservation<T: Serialize>(
        &self,
        migration: &str,
        kind: &str,
        target: &str,
        detail: &T,
        at_ms: i64,
    ) -> Result<i64, StoreError> {
        self.add_reservation_json(
            migration,
            kind,
            target,
            &to_json("reservations", detail)?,
            at_ms,
        )
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

/// `v` as JSON text for a record of `table`.
pub fn to_json<T: Serialize>(table: &'static str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Record {
        table,
        message: e.to_string(),
    })
}

/// The record of `table` in JSON text `s`.
pub(crate) fn from_json<T: DeserializeOwned>(
    table: &'static str,
    s: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Record {
        table,
        message: e.to_string(),
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        off_worker(|| Self::init(Connection::open(path)?))
    }

    /// A private in-memory database (tests, `--db :memory:`).
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<SqliteStore, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Self::add_decision_columns(&conn)?;
        conn.execute_batch(SCHEMA)?;
        let found: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match found {
            None => {
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES('schema_version', ?1)",
                    params![SCHEMA_VERSION.to_string()],
                )?;
            }
            Some(v) => {
                let found = v.parse::<i64>().unwrap_or(-1);
                if found != SCHEMA_VERSION {
                    return Err(StoreError::Version { found });
                }
            }
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    /// A database of an earlier version has no `count` and `last_ms` in
    /// `decisions`: add them (before the schema, whose index needs them).
    fn add_decision_columns(conn: &Connection) -> Result<(), StoreError> {
        let exists: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'decisions'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)?;
        if !exists {
            return Ok(());
        }
        let mut st = conn.prepare("SELECT name FROM pragma_table_info('decisions')")?;
        let cols: Vec<String> = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<_, _>>()?;
        if !cols.iter().any(|c| c == "count") {
            conn.execute_batch(
                "ALTER TABLE decisions ADD COLUMN count INTEGER NOT NULL DEFAULT 1",
            )?;
        }
        if !cols.iter().any(|c| c == "last_ms") {
            conn.execute_batch("ALTER TABLE decisions ADD COLUMN last_ms INTEGER")?;
        }
        Ok(())
    }

    fn c(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        debug_assert!(
            !on_runtime_worker(),
            "knowledge store: SQLite called on a tokio worker thread (go through the Store trait)"
        );
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }
}

thread_local! {
    /// Set while this thread runs a store call through [`off_worker`].
    static OFF_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True on a thread of a tokio runtime that is not inside [`off_worker`]:
/// a SQLite call here would stall every task of that worker.
fn on_runtime_worker() -> bool {
    tokio::runtime::Handle::try_current().is_ok() && !OFF_WORKER.with(|f| f.get())
}

/// Runs `f` (a SQLite call) off the tokio worker threads: in
/// [`tokio::task::block_in_place`] on a multi-threaded runtime (the
/// worker's other tasks move to another thread while `f` blocks), directly
/// elsewhere (no runtime, a blocking thread, or a current-thread runtime,
/// which has no other worker to hand its tasks to: tests only).
pub fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            OFF_WORKER.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(OFF_WORKER.with(|c| c.replace(true)));
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Records one decision inside transaction `tx` (see
/// [`Store::record_decision_json`]); returns its id.
fn record_decision_tx(
    tx: &rusqlite::Transaction<'_>,
    round: i64,
    at_ms: i64,
    policy: &str,
    j: &str,
    outcome: &str,
) -> Result<i64, StoreError> {
    let same: Option<i64> = tx
        .prepare_cached(
            "SELECT id FROM decisions
                 WHERE id > (SELECT COALESCE(MAX(id), 0) FROM decisions) - ?4
                   AND policy = ?1 AND decision = ?2 AND outcome = ?3
                 ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![policy, j, outcome, COALESCE_WINDOW], |r| r.get(0))
        .optional()?;
    let id = match same {
        Some(id) => {
            tx.prepare_cached(
                "UPDATE decisions SET count = count + 1, last_ms = ?2 WHERE id = ?1",
            )?
            .execute(params![id, at_ms])?;
            id
        }
        None => {
            tx.prepare_cached(
                "INSERT INTO decisions(round, at_ms, policy, decision, outcome, count, last_ms)
                     VALUES(?1, ?2, ?3, ?4, ?5, 1, ?2)",
            )?
            .execute(params![round, at_ms, policy, j, outcome])?;
            tx.last_insert_rowid()
        }
    };
    Ok(id)
}

/// The columns of a decision row, in the order [`decision_of`] reads them.
const DECISION_COLS: &str = "id, round, at_ms, policy, decision, outcome, count, last_ms";

/// The decision in a row of [`DECISION_COLS`].
fn decision_of(r: &rusqlite::Row<'_>) -> Result<DecisionRow, StoreError> {
    let at_ms: i64 = r.get(2)?;
    let d: String = r.get(4)?;
    Ok(DecisionRow {
        id: r.get(0)?,
        round: r.get(1)?,
        at_ms,
        policy: r.get(3)?,
        decision: from_json("decisions", &d)?,
        outcome: r.get(5)?,
        count: r.get(6)?,
        last_ms: r.get::<_, Option<i64>>(7)?.unwrap_or(at_ms),
    })
}

/// The decisions `sql` selects (columns [`DECISION_COLS`]), in its order.
fn decision_rows(
    c: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<DecisionRow>, StoreError> {
    let mut st = c.prepare_cached(sql)?;
    let mut rows = st.query(p)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(decision_of(r)?);
    }
    Ok(out)
}

impl Store for SqliteStore {
    fn set_config_json(&self, key: &str, json: &str) -> Result<(), StoreError> {
        off_worker(|| self.set_config_json_db(key, json))
    }
    fn config_json(&self, key: &str) -> Result<Option<String>, StoreError> {
        off_worker(|| self.config_json_db(key))
    }
    fn put_host_json(&self, id: &str, json: &str, at_ms: i64) -> Result<(), StoreError> {
        off_worker(|| self.put_host_json_db(id, json, at_ms))
    }
    fn put_report_json(&self, id: &str, json: &str, at_ms: i64) -> Result<(), StoreError> {
        off_worker(|| self.put_report_json_db(id, json, at_ms))
    }
    fn put_reports_json(&self, rows: &[(String, String, i64)]) -> Result<(), StoreError> {
        off_worker(|| self.put_reports_json_db(rows))
    }
    fn hosts_json(&self) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        off_worker(|| self.hosts_json_db())
    }
    fn put_vm_json(
        &self,
        name: &str,
        host: &str,
        json: &str,
        at_ms: i64,
        reason: &str,
    ) -> Result<Option<String>, StoreError> {
        off_worker(|| self.put_vm_json_db(name, host, json, at_ms, reason))
    }
    fn vms_json(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        off_worker(|| self.vms_json_db())
    }
    fn placements(&self, vm: Option<&str>, limit: usize) -> Result<Vec<Placement>, StoreError> {
        off_worker(|| self.placements_db(vm, limit))
    }
    fn record_decision_json(
        &self,
        round: i64,
        at_ms: i64,
        policy: &str,
        json: &str,
        outcome: &str,
    ) -> Result<i64, StoreError> {
        off_worker(|| self.record_decision_json_db(round, at_ms, policy, json, outcome))
    }
    fn record_decisions_json(
        &self,
        round: i64,
        policy: &str,
        rows: &[(i64, String, String)],
    ) -> Result<Vec<i64>, StoreError> {
        off_worker(|| self.record_decisions_json_db(round, policy, rows))
    }
    fn set_decision_outcome(&self, id: i64, outcome: &str) -> Result<(), StoreError> {
        off_worker(|| self.set_decision_outcome_db(id, outcome))
    }
    fn decisions(&self, limit: usize) -> Result<Vec<DecisionRow>, StoreError> {
        off_worker(|| self.decisions_db(limit))
    }
    fn decision_json(&self, id: i64) -> Result<Option<DecisionRow>, StoreError> {
        off_worker(|| self.decision_db(id))
    }
    fn decisions_query(&self, q: &DecisionQuery) -> Result<Vec<DecisionRow>, StoreError> {
        off_worker(|| self.decisions_query_db(q))
    }
    fn migrations_query(&self, q: &MigrationQuery) -> Result<Vec<String>, StoreError> {
        off_worker(|| self.migrations_query_db(q))
    }
    fn record_audit_json(
        &self,
        at_ms: i64,
        actor: &str,
        action: &str,
        target: &str,
        detail_json: &str,
    ) -> Result<i64, StoreError> {
        off_worker(|| self.record_audit_json_db(at_ms, actor, action, target, detail_json))
    }
    fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        off_worker(|| self.audit_db(q))
    }
    fn put_migration_json(
        &self,
        id: &str,
        vm: &str,
        state: &str,
        json: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        off_worker(|| self.put_migration_json_db(id, vm, state, json, at_ms))
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
        off_worker(|| self.put_migration_json_if_db(id, vm, expected_state, state, json, at_ms))
    }
    fn migration_json(&self, id: &str) -> Result<Option<String>, StoreError> {
        off_worker(|| self.migration_json_db(id))
    }
    fn migrations_json(
        &self,
        states: Option<&[&str]>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        off_worker(|| self.migrations_json_db(states, limit))
    }
    fn add_reservation_json(
        &self,
        migration: &str,
        kind: &str,
        target: &str,
        json: &str,
        at_ms: i64,
    ) -> Result<i64, StoreError> {
        off_worker(|| self.add_reservation_json_db(migration, kind, target, json, at_ms))
    }
    fn remove_reservation(&self, id: i64, at_ms: i64) -> Result<(), StoreError> {
        off_worker(|| self.remove_reservation_db(id, at_ms))
    }
    fn live_reservations(
        &self,
        migration: Option<&str>,
    ) -> Result<Vec<ReservationRow>, StoreError> {
        off_worker(|| self.live_reservations_db(migration))
    }
    fn prune(&self, r: &Retention, now_ms: i64) -> Result<Pruned, StoreError> {
        off_worker(|| self.prune_db(r, now_ms))
    }
}

/// The SQLite calls themselves (run through [`off_worker`] by the
/// [`Store`] implementation).
impl SqliteStore {
    // ---- configuration ---------------------------------------------------

    fn set_config_json_db(&self, key: &str, v: &str) -> Result<(), StoreError> {
        self.c()?.execute(
            "INSERT INTO meta(key, value) VALUES(?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![format!("config.{key}"), v],
        )?;
        Ok(())
    }

    fn config_json_db(&self, key: &str) -> Result<Option<String>, StoreError> {
        let v: Option<String> = self
            .c()?
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![format!("config.{key}")],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v)
    }

    // ---- hosts and VMs ---------------------------------------------------

    fn put_host_json_db(&self, id: &str, j: &str, at_ms: i64) -> Result<(), StoreError> {
        self.c()?.execute(
            "INSERT INTO hosts(id, registration, registered_ms) VALUES(?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET registration = excluded.registration,
                                           registered_ms = excluded.registered_ms",
            params![id, j, at_ms],
        )?;
        Ok(())
    }

    fn put_report_json_db(&self, id: &str, j: &str, at_ms: i64) -> Result<(), StoreError> {
        self.c()?.execute(
            "UPDATE hosts SET last_report = ?2, last_report_ms = ?3 WHERE id = ?1",
            params![id, j, at_ms],
        )?;
        Ok(())
    }

    fn put_reports_json_db(&self, rows: &[(String, String, i64)]) -> Result<(), StoreError> {
        let mut c = self.c()?;
        let tx = c.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "UPDATE hosts SET last_report = ?2, last_report_ms = ?3 WHERE id = ?1",
            )?;
            for (id, j, at) in rows {
                st.execute(params![id, j, at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn hosts_json_db(&self) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        let c = self.c()?;
        let mut st = c.prepare("SELECT id, registration, last_report FROM hosts ORDER BY id")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_vm_json_db(
        &self,
        name: &str,
        host: &str,
        j: &str,
        at_ms: i64,
        reason: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut c = self.c()?;
        let tx = c.transaction()?;
        let prev: Option<String> = tx
            .query_row("SELECT host FROM vms WHERE name = ?1", params![name], |r| {
                r.get(0)
            })
            .optional()?;
        tx.execute(
            "INSERT INTO vms(name, host, inventory, updated_ms) VALUES(?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET host = excluded.host, inventory = excluded.inventory,
                                             updated_ms = excluded.updated_ms",
            params![name, host, j, at_ms],
        )?;
        if prev.as_deref() != Some(host) {
            tx.execute(
                "INSERT INTO placements(vm, from_host, to_host, at_ms, reason) VALUES(?1, ?2, ?3, ?4, ?5)",
                params![name, prev, host, at_ms, reason],
            )?;
        }
        tx.commit()?;
        Ok(prev)
    }

    fn vms_json_db(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let c = self.c()?;
        let mut st = c.prepare("SELECT name, host, inventory FROM vms ORDER BY name")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn placements_db(&self, vm: Option<&str>, limit: usize) -> Result<Vec<Placement>, StoreError> {
        let c = self.c()?;
        let mut st = c.prepare(
            "SELECT vm, from_host, to_host, at_ms, reason FROM (
                 SELECT * FROM placements WHERE ?1 IS NULL OR vm = ?1 ORDER BY id DESC LIMIT ?2
             ) ORDER BY id",
        )?;
        let rows = st.query_map(params![vm, limit as i64], |r| {
            Ok(Placement {
                vm: r.get(0)?,
                from_host: r.get(1)?,
                to_host: r.get(2)?,
                at_ms: r.get(3)?,
                reason: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- decisions -------------------------------------------------------

    fn record_decision_json_db(
        &self,
        round: i64,
        at_ms: i64,
        policy: &str,
        j: &str,
        outcome: &str,
    ) -> Result<i64, StoreError> {
        let mut c = self.c()?;
        let tx = c.transaction()?;
        let id = record_decision_tx(&tx, round, at_ms, policy, j, outcome)?;
        tx.commit()?;
        Ok(id)
    }

    fn record_decisions_json_db(
        &self,
        round: i64,
        policy: &str,
        rows: &[(i64, String, String)],
    ) -> Result<Vec<i64>, StoreError> {
        let mut c = self.c()?;
        let tx = c.transaction()?;
        let ids = rows
            .iter()
            .map(|(at, j, outcome)| record_decision_tx(&tx, round, *at, policy, j, outcome))
            .collect::<Result<Vec<i64>, StoreError>>()?;
        tx.commit()?;
        Ok(ids)
    }

    fn set_decision_outcome_db(&self, id: i64, outcome: &str) -> Result<(), StoreError> {
        self.c()?.execute(
            "UPDATE decisions SET outcome = ?2 WHERE id = ?1",
            params![id, outcome],
        )?;
        Ok(())
    }

    fn decisions_db(&self, limit: usize) -> Result<Vec<DecisionRow>, StoreError> {
        let c = self.c()?;
        decision_rows(
            &c,
            "SELECT id, round, at_ms, policy, decision, outcome, count, last_ms FROM (
                 SELECT * FROM decisions ORDER BY id DESC LIMIT ?1
             ) ORDER BY id",
            params![limit as i64],
        )
    }

    fn decision_db(&self, id: i64) -> Result<Option<DecisionRow>, StoreError> {
        let c = self.c()?;
        let mut rows = decision_rows(
            &c,
            &format!("SELECT {DECISION_COLS} FROM decisions WHERE id = ?1"),
            params![id],
        )?;
        Ok(rows.pop())
    }

    /// Decisions newest first, pre-filtered in SQL (the cursor, times,
    /// policy, and the JSON's VM and host); the outcome class is matched
    /// here, row by row, until the limit.
    fn decisions_query_db(&self, q: &DecisionQuery) -> Result<Vec<DecisionRow>, StoreError> {
        let limit = q.capped_limit();
        if limit == 0 {
            return Ok(Vec::new());
        }
        let c = self.c()?;
        let mut st = c.prepare_cached(&format!(
            "SELECT {DECISION_COLS} FROM decisions
             WHERE id < ?1
               AND (?2 IS NULL OR MAX(COALESCE(last_ms, at_ms), at_ms) >= ?2)
               AND (?3 IS NULL OR at_ms <= ?3)
               AND (?4 IS NULL OR policy = ?4)
               AND (?5 IS NULL OR json_extract(decision, '$.vm') = ?5)
               AND (?6 IS NULL OR json_extract(decision, '$.from') = ?6
                    OR json_extract(decision, '$.to') = ?6
                    OR json_extract(decision, '$.host') = ?6)
             ORDER BY id DESC"
        ))?;
        let mut rows = st.query(params![
            q.before_id.unwrap_or(i64::MAX),
            q.since_ms,
            q.until_ms,
            q.policy,
            q.vm,
            q.host
        ])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let d = decision_of(r)?;
            if q.matches(d.at_ms, d.last_ms, &d.policy, &d.decision, &d.outcome) {
                out.push(d);
                if out.len() == limit {
                    break;
                }
            }
        }
        out.reverse();
        Ok(out)
    }

    // ---- retention -------------------------------------------------------

    fn prune_db(&self, r: &Retention, now_ms: i64) -> Result<Pruned, StoreError> {
        let mut c = self.c()?;
        let tx = c.transaction()?;
        let cut = |t: &TableLimit| now_ms.saturating_sub(t.max_age_ms);
        let keep = |t: &TableLimit| i64::try_from(t.max_rows).unwrap_or(i64::MAX);
        let d = &r.decisions;
        let decisions = tx.execute(
            "DELETE FROM decisions WHERE COALESCE(last_ms, at_ms) < ?1
                OR id NOT IN (SELECT id FROM decisions ORDER BY id DESC LIMIT ?2)",
            params![cut(d), keep(d)],
        )?;
        let p = &r.placements;
        let placements = tx.execute(
            "DELETE FROM placements WHERE at_ms < ?1
                OR id NOT IN (SELECT id FROM placements ORDER BY id DESC LIMIT ?2)",
            params![cut(p), keep(p)],
        )?;
        let m = &r.migrations;
        let migrations = tx.execute(
            "DELETE FROM migrations WHERE state IN ('done', 'failed', 'cancelled')
                AND (updated_ms < ?1 OR id NOT IN (
                    SELECT id FROM migrations WHERE state IN ('done', 'failed', 'cancelled')
                    ORDER BY updated_ms DESC, id DESC LIMIT ?2))",
            params![cut(m), keep(m)],
        )?;
        let v = &r.reservations;
        let reservations = tx.execute(
            "DELETE FROM reservations WHERE removed_ms IS NOT NULL
                AND (removed_ms < ?1 OR id NOT IN (
                    SELECT id FROM reservations WHERE removed_ms IS NOT NULL
                    ORDER BY id DESC LIMIT ?2))",
            params![cut(v), keep(v)],
        )?;
        let a = &r.audit;
        let audit = tx.execute(
            "DELETE FROM audit WHERE at_ms < ?1
                OR id NOT IN (SELECT id FROM audit ORDER BY id DESC LIMIT ?2)",
            params![cut(a), keep(a)],
        )?;
        tx.commit()?;
        Ok(Pruned {
            decisions,
            migrations,
            placements,
            reservations,
            audit,
        })
    }

    // ---- migrations ------------------------------------------------------

    fn put_migration_json_db(
        &self,
        id: &str,
        vm: &str,
        state: &str,
        j: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.c()?.execute(
            "INSERT INTO migrations(id, vm, state, record, created_ms, updated_ms)
             VALUES(?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT(id) DO UPDATE SET state = excluded.state, record = excluded.record,
                                           updated_ms = excluded.updated_ms",
            params![id, vm, state, j, at_ms],
        )?;
        Ok(())
    }

    fn put_migration_json_if_db(
        &self,
        id: &str,
        vm: &str,
        expected_state: Option<&str>,
        state: &str,
        j: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut c = self.c()?;
        // Immediate: the read and the write see the same database even
        // when another connection writes in between.
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: Option<String> = tx
            .query_row(
                "SELECT state FROM migrations WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        if found.as_deref() != expected_state {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO migrations(id, vm, state, record, created_ms, updated_ms)
             VALUES(?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT(id) DO UPDATE SET state = excluded.state, record = excluded.record,
                                           updated_ms = excluded.updated_ms",
            params![id, vm, state, j, at_ms],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn migration_json_db(&self, id: &str) -> Result<Option<String>, StoreError> {
        let s: Option<String> = self
            .c()?
            .query_row(
                "SELECT record FROM migrations WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(s)
    }

    fn migrations_json_db(
        &self,
        states: Option<&[&str]>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let c = self.c()?;
        let mut st = c.prepare(
            "SELECT state, record FROM (
                 SELECT * FROM migrations ORDER BY created_ms DESC, id DESC LIMIT ?1
             ) ORDER BY created_ms, id",
        )?;
        let rows = st.query_map(params![limit as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (state, rec) = row?;
            if states.is_none_or(|s| s.contains(&state.as_str())) {
                out.push(rec);
            }
        }
        Ok(out)
    }

    fn migrations_query_db(&self, q: &MigrationQuery) -> Result<Vec<String>, StoreError> {
        let limit = q.capped_limit();
        if limit == 0 {
            return Ok(Vec::new());
        }
        let c = self.c()?;
        let mut st = c.prepare_cached(
            "SELECT vm, state, created_ms, record FROM migrations
             WHERE (?1 IS NULL OR state = ?1)
               AND (?2 IS NULL OR vm = ?2)
               AND (?3 IS NULL OR created_ms >= ?3)
               AND (?4 IS NULL OR created_ms <= ?4)
               AND (?5 IS NULL OR (created_ms, id) <
                    (SELECT created_ms, id FROM migrations WHERE id = ?5))
               AND (?6 IS NULL OR json_extract(record, '$.from') = ?6
                    OR json_extract(record, '$.to') = ?6)
             ORDER BY created_ms DESC, id DESC LIMIT ?7",
        )?;
        let mut rows = st.query(params![
            q.state,
            q.vm,
            q.since_ms,
            q.until_ms,
            q.before,
            q.host,
            limit as i64
        ])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let (vm, state, created, rec): (String, String, i64, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            if q.matches(&vm, &state, created, &rec) {
                out.push(rec);
            }
        }
        out.reverse();
        Ok(out)
    }

    // ---- audit -----------------------------------------------------------

    fn record_audit_json_db(
        &self,
        at_ms: i64,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<i64, StoreError> {
        let c = self.c()?;
        c.prepare_cached(
            "INSERT INTO audit(at_ms, actor, action, target, detail) VALUES(?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![at_ms, actor, action, target, detail])?;
        Ok(c.last_insert_rowid())
    }

    fn audit_db(&self, q: &AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        let limit = q.capped_limit();
        if limit == 0 {
            return Ok(Vec::new());
        }
        let c = self.c()?;
        let mut st = c.prepare_cached(
            "SELECT id, at_ms, actor, action, target, detail FROM audit
             WHERE id < ?1
               AND (?2 IS NULL OR at_ms >= ?2)
               AND (?3 IS NULL OR at_ms <= ?3)
               AND (?4 IS NULL OR actor = ?4)
               AND (?5 IS NULL OR action = ?5
                    OR (substr(?5, -1) = '.' AND substr(action, 1, length(?5)) = ?5))
               AND (?6 IS NULL OR target = ?6)
             ORDER BY id DESC LIMIT ?7",
        )?;
        let mut rows = st.query(params![
            q.before_id.unwrap_or(i64::MAX),
            q.since_ms,
            q.until_ms,
            q.actor,
            q.action,
            q.target,
            limit as i64
        ])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let detail: String = r.get(5)?;
            let row = AuditRow {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                detail: from_json("audit", &detail)?,
            };
            if q.matches(row.at_ms, &row.actor, &row.action, &row.target) {
                out.push(row);
            }
        }
        out.reverse();
        Ok(out)
    }

    // ---- reservations ----------------------------------------------------

    fn add_reservation_json_db(
        &self,
        migration: &str,
        kind: &str,
        target: &str,
        j: &str,
        at_ms: i64,
    ) -> Result<i64, StoreError> {
        let c = self.c()?;
        c.execute(
            "INSERT INTO reservations(migration, kind, target, detail, created_ms) VALUES(?1, ?2, ?3, ?4, ?5)",
            params![migration, kind, target, j, at_ms],
        )?;
        Ok(c.last_insert_rowid())
    }

    fn remove_reservation_db(&self, id: i64, at_ms: i64) -> Result<(), StoreError> {
        self.c()?.execute(
            "UPDATE reservations SET removed_ms = ?2 WHERE id = ?1 AND removed_ms IS NULL",
            params![id, at_ms],
        )?;
        Ok(())
    }

    fn live_reservations_db(
        &self,
        migration: Option<&str>,
    ) -> Result<Vec<ReservationRow>, StoreError> {
        let c = self.c()?;
        let mut st = c.prepare(
            "SELECT id, migration, kind, target, detail, created_ms, removed_ms FROM reservations
             WHERE removed_ms IS NULL AND (?1 IS NULL OR migration = ?1) ORDER BY id",
        )?;
        let rows = st.query_map(params![migration], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<i64>>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, migration, kind, target, detail, created_ms, removed_ms) = row?;
            out.push(ReservationRow {
                id,
                migration,
                kind,
                target,
                detail: from_json("reservations", &detail)?,
                created_ms,
                removed_ms,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A fresh database file in a directory of its own.
    fn db_file(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("k.db")
    }

    /// Removes the directory of a [`db_file`].
    fn remove_db(path: &std::path::Path) {
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Behaviour shared with every backend is in `store_suite`; this is
    /// the SQLite file's part: a coalesced count survives a reopen.
    #[test]
    fn coalesced_decisions_survive_reopen() {
        let path = db_file("coalesce");
        let s = SqliteStore::open(&path).unwrap();
        let hold = json!({"action": "none", "reason": "no hotspot"});
        for round in 0..10 {
            s.record_decision(round, 1000 + round, "sandpiper", &hold, "dry_run")
                .unwrap();
        }
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        let rows = s.decisions(100).unwrap();
        assert_eq!((rows.len(), rows[0].count, rows[0].last_ms), (1, 10, 1009));
        drop(s);
        remove_db(&path);
    }

    /// A database locked by another connection delays only the caller:
    /// on a runtime with a single worker thread, a timer task keeps
    /// running while a store write waits for the lock.
    #[test]
    fn a_locked_database_does_not_stall_the_runtime() {
        let path = db_file("locked");
        let s = std::sync::Arc::new(SqliteStore::open(&path).unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let holder = {
            let path = path.clone();
            std::thread::spawn(move || {
                let c = Connection::open(&path).unwrap();
                c.execute_batch("BEGIN EXCLUSIVE").unwrap();
                locked_tx.send(()).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1500));
                c.execute_batch("COMMIT").unwrap();
            })
        };
        locked_rx.recv().unwrap();
        let (ticks, waited) = rt.block_on(async move {
            let ticker = tokio::spawn(async {
                let mut n = 0u32;
                let t = std::time::Instant::now();
                while t.elapsed() < std::time::Duration::from_millis(1000) {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    n += 1;
                }
                n
            });
            // Let the ticker start on the only worker.
            tokio::task::yield_now().await;
            let writer = tokio::spawn(async move {
                let t = std::time::Instant::now();
                s.put_migration("m1", "vm", "queued", &json!({}), 1)
                    .unwrap();
                t.elapsed()
            });
            let waited = writer.await.unwrap();
            (ticker.await.unwrap(), waited)
        });
        holder.join().unwrap();
        assert!(
            waited >= std::time::Duration::from_millis(1000),
            "the write did not wait for the lock ({waited:?})"
        );
        assert!(
            ticks >= 20,
            "the runtime stalled while the store waited for the lock: {ticks} ticks of 20 ms in 1 s"
        );
        remove_db(&path);
    }

    /// A SQLite call that bypasses the trait on a runtime worker is caught
    /// in debug builds.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "tokio worker thread")]
    fn sqlite_on_a_worker_thread_is_a_bug() {
        let s = SqliteStore::open_in_memory().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { s.config_json_db("x") }).unwrap();
    }

    #[test]
    fn decisions_and_migrations_survive_reopen() {
        let dir = std::env::temp_dir().join(format!("shoal-store-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("k.db");
        let _ = std::fs::remove_file(&path);
        {
            let s = SqliteStore::open(&path).unwrap();
            let id = s
                .record_decision(3, 10, "sandpiper", &json!({"action": "migrate"}), "queued")
                .unwrap();
            s.set_decision_outcome(id, "executed").unwrap();
            s.put_migration(
                "m1",
                "vm1",
                "running",
                &json!({"id": "m1", "state": "running"}),
                11,
            )
            .unwrap();
            s.put_migration(
                "m2",
                "vm2",
                "done",
                &json!({"id": "m2", "state": "done"}),
                12,
            )
            .unwrap();
            let r = s
                .add_reservation(
                    "m1",
                    "meter",
                    "0000000000000001",
                    &json!({"meter_id": 7}),
                    13,
                )
                .unwrap();
            s.add_reservation("m1", "flow", "0000000000000002", &json!({}), 13)
                .unwrap();
            s.remove_reservation(r, 14).unwrap();
            s.set_config("policy", &json!({"name": "idc"})).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let d = s.decisions(10).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].outcome, "executed");
        let running: Vec<serde_json::Value> = s.migrations(Some(&["running"]), 100).unwrap();
        assert_eq!(running, vec![json!({"id": "m1", "state": "running"})]);
        let all: Vec<serde_json::Value> = s.migrations(None, 100).unwrap();
        assert_eq!(all.len(), 2);
        let live = s.live_reservations(Some("m1")).unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].kind, "flow");
        assert_eq!(
            s.config::<serde_json::Value>("policy").unwrap(),
            Some(json!({"name": "idc"}))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let s = SqliteStore::open_in_memory().unwrap();
        s.c()
            .unwrap()
            .execute(
                "INSERT INTO migrations(id, vm, state, record, created_ms, updated_ms) VALUES('x','v','running','{not json',1,1)",
                [],
            )
            .unwrap();
        let r: Result<Vec<serde_json::Value>, _> = s.migrations(None, 10);
        assert!(matches!(
            r,
            Err(StoreError::Record {
                table: "migrations",
                ..
            })
        ));
    }
}
