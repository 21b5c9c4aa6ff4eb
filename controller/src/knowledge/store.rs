//! The persistent knowledge store: an embedded SQLite database (rusqlite,
//! bundled) holding what must survive a controller restart — hosts and their
//! latest registration and report, VMs, placement history, decisions,
//! migrations with their state, the reservations made for them, and
//! configuration (the active policy).
//!
//! Records are stored as JSON in typed tables with the columns that are
//! queried (ids, states, times) broken out. Every write is one statement or
//! one transaction; the database runs in WAL mode, so a `kill -9` loses at
//! most the write in progress. Calls are synchronous and short: callers in
//! async code hold the store only for one call.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

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
    outcome  TEXT NOT NULL
);
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
}

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
/// types); [`StoreExt`] adds the typed calls every caller uses. The SQLite
/// implementation is [`SqliteStore`]; the cluster work adds etcd.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores a configuration value (JSON text) under `key`.
    fn set_config_json(&self, key: &str, json: &str) -> Result<(), StoreError>;
    /// Reads a configuration value (JSON text).
    fn config_json(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Stores a host's registration (replacing the previous one).
    fn put_host_json(&self, id: &str, json: &str, at_ms: i64) -> Result<(), StoreError>;
    /// Stores a host's latest report.
    fn put_report_json(&self, id: &str, json: &str, at_ms: i64) -> Result<(), StoreError>;
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
    /// Records a decision and its outcome; returns its id.
    fn record_decision_json(
        &self,
        round: i64,
        at_ms: i64,
        policy: &str,
        json: &str,
        outcome: &str,
    ) -> Result<i64, StoreError>;
    /// Updates a decision's outcome.
    fn set_decision_outcome(&self, id: i64, outcome: &str) -> Result<(), StoreError>;
    /// The most recent decisions, newest last.
    fn decisions(&self, limit: usize) -> Result<Vec<DecisionRow>, StoreError>;
    /// Inserts or updates a migration record.
    fn put_migration_json(
        &self,
        id: &str,
        vm: &str,
        state: &str,
        json: &str,
        at_ms: i64,
    ) -> Result<(), StoreError>;
    /// One migration record.
    fn migration_json(&self, id: &str) -> Result<Option<String>, StoreError>;
    /// Migration records, oldest first; only those in `states` when given.
    fn migrations_json(
        &self,
        states: Option<&[&str]>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
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

fn to_json<T: Serialize>(table: &'static str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Record {
        table,
        message: e.to_string(),
    })
}

fn from_json<T: DeserializeOwned>(table: &'static str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Record {
        table,
        message: e.to_string(),
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// A private in-memory database (tests, `--db :memory:`).
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<SqliteStore, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
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

    fn c(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }
}

impl Store for SqliteStore {
    // ---- configuration ---------------------------------------------------

    fn set_config_json(&self, key: &str, v: &str) -> Result<(), StoreError> {
        self.c()?.execute(
            "INSERT INTO meta(key, value) VALUES(?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![format!("config.{key}"), v],
        )?;
        Ok(())
    }

    fn config_json(&self, key: &str) -> Result<Option<String>, StoreError> {
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

    fn put_host_json(&self, id: &str, j: &str, at_ms: i64) -> Result<(), StoreError> {
        self.c()?.execute(
            "INSERT INTO hosts(id, registration, registered_ms) VALUES(?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET registration = excluded.registration,
                                           registered_ms = excluded.registered_ms",
            params![id, j, at_ms],
        )?;
        Ok(())
    }

    fn put_report_json(&self, id: &str, j: &str, at_ms: i64) -> Result<(), StoreError> {
        self.c()?.execute(
            "UPDATE hosts SET last_report = ?2, last_report_ms = ?3 WHERE id = ?1",
            params![id, j, at_ms],
        )?;
        Ok(())
    }

    fn hosts_json(&self) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
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

    fn put_vm_json(
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

    fn vms_json(&self) -> Result<Vec<(String, String, String)>, StoreError> {
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

    fn placements(&self, vm: Option<&str>, limit: usize) -> Result<Vec<Placement>, StoreError> {
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

    fn record_decision_json(
        &self,
        round: i64,
        at_ms: i64,
        policy: &str,
        j: &str,
        outcome: &str,
    ) -> Result<i64, StoreError> {
        let c = self.c()?;
        c.execute(
            "INSERT INTO decisions(round, at_ms, policy, decision, outcome) VALUES(?1, ?2, ?3, ?4, ?5)",
            params![round, at_ms, policy, j, outcome],
        )?;
        Ok(c.last_insert_rowid())
    }

    fn set_decision_outcome(&self, id: i64, outcome: &str) -> Result<(), StoreError> {
        self.c()?.execute(
            "UPDATE decisions SET outcome = ?2 WHERE id = ?1",
            params![id, outcome],
        )?;
        Ok(())
    }

    fn decisions(&self, limit: usize) -> Result<Vec<DecisionRow>, StoreError> {
        let c = self.c()?;
        let mut st = c.prepare(
            "SELECT id, round, at_ms, policy, decision, outcome FROM (
                 SELECT * FROM decisions ORDER BY id DESC LIMIT ?1
             ) ORDER BY id",
        )?;
        let rows = st.query_map(params![limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, round, at_ms, policy, d, outcome) = row?;
            out.push(DecisionRow {
                id,
                round,
                at_ms,
                policy,
                decision: from_json("decisions", &d)?,
                outcome,
            });
        }
        Ok(out)
    }

    // ---- migrations ------------------------------------------------------

    fn put_migration_json(
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

    fn migration_json(&self, id: &str) -> Result<Option<String>, StoreError> {
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

    fn migrations_json(
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

    // ---- reservations ----------------------------------------------------

    fn add_reservation_json(
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

    fn remove_reservation(&self, id: i64, at_ms: i64) -> Result<(), StoreError> {
        self.c()?.execute(
            "UPDATE reservations SET removed_ms = ?2 WHERE id = ?1 AND removed_ms IS NULL",
            params![id, at_ms],
        )?;
        Ok(())
    }

    fn live_reservations(
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

    #[test]
    fn hosts_vms_and_placement_history() {
        let s = SqliteStore::open_in_memory().unwrap();
        s.put_host("hv1", &json!({"cores": 4}), 1).unwrap();
        s.put_report("hv1", &json!({"cpu": 0.5}), 2).unwrap();
        s.put_host("hv2", &json!({"cores": 8}), 3).unwrap();
        let h: Vec<(String, serde_json::Value, Option<serde_json::Value>)> = s.hosts().unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].2, Some(json!({"cpu": 0.5})));
        assert_eq!(h[1].2, None);
        assert_eq!(
            s.put_vm("vm1", "hv1", &json!({}), 4, "registration")
                .unwrap(),
            None
        );
        assert_eq!(
            s.put_vm("vm1", "hv1", &json!({"x": 1}), 5, "registration")
                .unwrap(),
            Some("hv1".into())
        );
        assert_eq!(
            s.put_vm("vm1", "hv2", &json!({}), 6, "migration m1")
                .unwrap(),
            Some("hv1".into())
        );
        let p = s.placements(Some("vm1"), 10).unwrap();
        assert_eq!(p.len(), 2, "only changes are history");
        assert_eq!(p[1].from_host.as_deref(), Some("hv1"));
        assert_eq!(p[1].to_host, "hv2");
        assert_eq!(p[1].reason, "migration m1");
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
