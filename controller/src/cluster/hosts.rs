//! Hosts registered at other nodes: a cluster node follows the host rows of
//! the shared store (`<prefix>/store/hosts/`, written by whichever node a
//! host daemon talks to) and applies them to its own host registry, so the
//! leader plans with every host, and a newly elected leader has every
//! host's recent report window at once.
//!
//! Rows this node wrote itself come back through the watch too: a
//! registration equal to the one held is skipped, and a report is applied
//! only when it is newer than the host's last one (a higher sequence
//! number, or a restarted daemon's report stored later than the last one
//! seen). Applied rows never go back to the store (no echo).

use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::cluster::etcd::{connect, PutFollower};
use crate::config::ClusterSettings;
use crate::knowledge::etcd_store::{decode_host_row, hosts_prefix, HostRowChange};
use crate::knowledge::state::Knowledge;
use shoal_common::proto::{Registration, Report};

/// Applies one host row to the registry; true when it changed anything.
pub fn apply(knowledge: &Knowledge, change: HostRowChange) -> bool {
    match change {
        HostRowChange::Registration { id, json } => {
            let Ok(reg) = serde_json::from_str::<Registration>(&json) else {
                debug!(host = %id, "shared registration does not decode: ignored");
                return false;
            };
            let Ok(mut hosts) = knowledge.hosts_write() else {
                return false;
            };
            if hosts.host(&id).is_some_and(|e| e.registration == reg) {
                return false;
            }
            match hosts.register(&id, reg, crate::knowledge::clock::now_unix_ms()) {
                Ok(_) => {
                    info!(host = %id, "host registration learnt from the cluster");
                    true
                }
                Err(e) => {
                    warn!(host = %id, error = %e, "shared registration refused");
                    false
                }
            }
        }
        HostRowChange::Report { id, json, at_ms } => {
            let Ok(rep) = serde_json::from_str::<Report>(&json) else {
                debug!(host = %id, "shared report does not decode: ignored");
                return false;
            };
            let Ok(mut hosts) = knowledge.hosts_write() else {
                return false;
            };
            let Some(e) = hosts.host(&id) else {
                return false;
            };
            let newer = rep.seq > e.last_report_seq()
                || (rep.seq < e.last_report_seq() && e.last_report_ms.is_none_or(|t| at_ms > t));
            if !newer {
                return false;
            }
            hosts.report(&id, rep, at_ms).is_ok()
        }
    }
}

/// Follows the shared host rows until shutdown (reconnecting and reading
/// everything again after any error).
pub async fn follow(
    knowledge: Arc<Knowledge>,
    cfg: ClusterSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let prefix = hosts_prefix(&cfg.prefix);
    loop {
        let r = tokio::select! {
            r = follow_once(&knowledge, &cfg, &prefix) => r,
            _ = shutdown.changed() => if *shutdown.borrow() { return } else { continue },
        };
        if let Err(e) = r {
            debug!(error = %e, "following shared hosts: starting again");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => if *shutdown.borrow() { return },
        }
    }
}

async fn follow_once(
    knowledge: &Knowledge,
    cfg: &ClusterSettings,
    prefix: &str,
) -> Result<(), crate::cluster::etcd::ClusterError> {
    let mut c: Client = connect(cfg).await?;
    let (kvs, mut follower) = PutFollower::start(&mut c, prefix).await?;
    // Registrations first: a report of an unknown host is not applied.
    let mut rows: Vec<HostRowChange> = kvs
        .iter()
        .filter_map(|kv| decode_host_row(&cfg.prefix, kv.key_str().ok()?, kv.value()))
        .collect();
    rows.sort_by_key(|r| matches!(r, HostRowChange::Report { .. }));
    for row in rows {
        apply(knowledge, row);
    }
    while let Some(puts) = follower.next().await? {
        for kv in &puts {
            let Ok(key) = kv.key_str() else { continue };
            if let Some(row) = decode_host_row(&cfg.prefix, key, kv.value()) {
                apply(knowledge, row);
            }
        }
    }
    Ok(())
}
