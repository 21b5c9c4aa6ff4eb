//! Host reports on their way to the knowledge store.
//!
//! The report handler hands each accepted report to a [`ReportQueue`] and
//! answers at once; [`write_loop`] stores the latest report of every host
//! that reported in one transaction per flush interval. A later report of
//! a host replaces the one still waiting: the store keeps only the latest
//! report of each host, so nothing it holds is lost by the coalescing.
//!
//! Writing each report on the request path (an SQLite upsert of its JSON)
//! was a third of the controller's CPU at 1,000 reports/s and delayed every
//! report by the write; now the cost is one transaction per interval for
//! at most one report per registered host. A stored report is at most one
//! interval (plus the write) older than the registry's; a shutdown flushes
//! what waits, a `kill -9` loses at most one interval of latest reports
//! (hostd sends a new one every interval anyway).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_common::proto::Report;
use tokio::sync::watch;
use tracing::warn;

use crate::knowledge::store::{to_json, Store};

/// How often waiting reports are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The latest report of each host not yet written, with its arrival time
/// (Unix ms). Bounded by the number of registered hosts: only reports the
/// registry accepted are queued.
#[derive(Debug, Default)]
pub struct ReportQueue {
    waiting: Mutex<HashMap<String, (Report, i64)>>,
}

impl ReportQueue {
    /// Queues host `id`'s report (replacing one of it still waiting).
    pub fn push(&self, id: &str, report: Report, at_ms: i64) {
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        match w.get_mut(id) {
            Some(slot) => *slot = (report, at_ms),
            None => {
                w.insert(id.to_string(), (report, at_ms));
            }
        }
    }

    /// Takes everything waiting.
    pub fn take(&self) -> HashMap<String, (Report, i64)> {
        std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reports waiting.
    pub fn len(&self) -> usize {
        self.waiting.lock().map(|w| w.len()).unwrap_or(0)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes what waits in `queue` to `store` in one transaction (on a
/// blocking thread); returns how many reports were written.
pub async fn flush(queue: &ReportQueue, store: &Arc<dyn Store>) -> usize {
    let batch = queue.take();
    if batch.is_empty() {
        return 0;
    }
    let store = store.clone();
    let written = tokio::task::spawn_blocking(move || {
        let rows: Vec<(String, String, i64)> = batch
            .into_iter()
            .filter_map(|(id, (rep, at))| match to_json("hosts", &rep) {
                Ok(j) => Some((id, j, at)),
                Err(e) => {
                    warn!(host = %id, error = %e, "cannot encode a report for the store");
                    None
                }
            })
            .collect();
        let n = rows.len();
        store.put_reports_json(&rows).map(|()| n)
    })
    .await;
    match written {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            warn!(error = %e, "cannot persist host reports");
            0
        }
        Err(e) => {
            warn!(error = %e, "report writer failed");
            0
        }
    }
}

/// Flushes `queue` into `store` every `every` until shutdown, then once
/// more.
pub async fn write_loop(
    queue: Arc<ReportQueue>,
    store: Arc<dyn Store>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => { flush(&queue, &store).await; }
            _ = shutdown.changed() => if *shutdown.borrow() { break },
        }
    }
    flush(&queue, &store).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::store::SqliteStore;

    fn report(host: &str, seq: u64) -> Report {
        serde_json::from_value(serde_json::json!({
            "host_id": host, "seq": seq, "at_unix_ms": 1000 + seq, "interval_s": 1.0,
            "host": {"cpu_util": 0.5, "mem_used_mb": 100, "mem_total_mb": 1000, "swap_out_pages_per_s": 0.0,
                     "swap_in_pages_per_s": 0.0, "nic_tx_bytes_per_s": 0.0,
                     "nic_rx_bytes_per_s": 0.0},
            "vms": [], "events": []
        }))
        .unwrap()
    }

    /// The latest report of each host reaches the store in one flush; a
    /// later report replaces the waiting one; a shutdown flushes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn latest_reports_are_written_in_one_flush_and_at_shutdown() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        for h in ["h1", "h2"] {
            store.put_host_json(h, "{}", 1).unwrap();
        }
        let q = Arc::new(ReportQueue::default());
        q.push("h1", report("h1", 1), 10);
        q.push("h1", report("h1", 2), 11);
        q.push("h2", report("h2", 7), 12);
        assert_eq!(q.len(), 2);
        assert_eq!(flush(&q, &store).await, 2);
        assert!(q.is_empty());
        let stored = |h: &str| -> u64 {
            let rows = store.hosts_json().unwrap();
            let (_, _, rep) = rows.into_iter().find(|(id, _, _)| id == h).unwrap();
            serde_json::from_str::<Report>(&rep.unwrap()).unwrap().seq
        };
        assert_eq!(stored("h1"), 2, "the later report replaced the waiting one");
        assert_eq!(stored("h2"), 7);

        // The loop writes what waits when it is told to stop.
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(write_loop(
            q.clone(),
            store.clone(),
            Duration::from_secs(3600),
            rx,
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        q.push("h2", report("h2", 8), 13);
        tx.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(stored("h2"), 8);
        assert!(q.is_empty());
    }
}
