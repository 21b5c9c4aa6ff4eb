//! The controller's event stream (`GET /api/v1/events`, Server-Sent
//! Events): switch and link changes, endpoints that moved, hotspots raised
//! and cleared, decisions, migration state changes with their progress,
//! reservations installed and removed, VFs moved, the policy changed.
//!
//! Every event gets the next id (1, 2, …: monotonic for the process's
//! life). The bus keeps the last [`EventBus::new`] `ring` events, so a
//! client that reconnects with `Last-Event-ID` receives everything after
//! that id — or, when the ring no longer reaches back that far, a `gap`
//! event first saying which ids are lost. Publishing never waits: each
//! client reads from a bounded channel (`per_client` events); a client that
//! falls that far behind is dropped (its stream ends; it may reconnect and
//! resume from the ring), and the controller never slows down for it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;

/// Events kept for resuming, by default.
pub const DEFAULT_RING: usize = 4096;
/// Events a client may lag behind before it is dropped, by default.
pub const DEFAULT_PER_CLIENT: usize = 1024;

/// One event as sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stamped {
    /// Its id (1, 2, …).
    pub id: u64,
    /// When, Unix ms.
    pub at_unix_ms: i64,
    /// What (`switch_up`, `migration`, …; the SSE event name).
    pub kind: &'static str,
    /// Its details.
    pub data: serde_json::Value,
}

struct Ring {
    next: u64,
    buf: VecDeque<Arc<Stamped>>,
    cap: usize,
}

/// The bus every producer publishes on and every client subscribes to.
pub struct EventBus {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<Stamped>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventBus")
    }
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(DEFAULT_RING, DEFAULT_PER_CLIENT)
    }
}

/// What a new client starts with.
#[derive(Debug)]
pub struct Subscription {
    /// Ids lost before the backlog (`Last-Event-ID` older than the ring):
    /// `(first lost, last lost)`.
    pub gap: Option<(u64, u64)>,
    /// Events after the client's `Last-Event-ID`, oldest first.
    pub backlog: Vec<Arc<Stamped>>,
    /// Every later event.
    pub rx: broadcast::Receiver<Arc<Stamped>>,
}

impl EventBus {
    /// A bus keeping `ring` events for resuming, each client at most
    /// `per_client` events behind (both at least 1).
    pub fn new(ring: usize, per_client: usize) -> Self {
        let (tx, _) = broadcast::channel(per_client.max(1));
        EventBus {
            ring: Mutex::new(Ring {
                next: 1,
                buf: VecDeque::new(),
                cap: ring.max(1),
            }),
            tx,
        }
    }

    /// Publishes an event; returns its id. Never waits for a client.
    pub fn publish(&self, kind: &'static str, data: serde_json::Value) -> u64 {
        let mut r = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let id = r.next;
        r.next += 1;
        let e = Arc::new(Stamped {
            id,
            at_unix_ms: crate::knowledge::clock::now_unix_ms(),
            kind,
            data,
        });
        if r.buf.len() == r.cap {
            r.buf.pop_front();
        }
        r.buf.push_back(e.clone());
        // Under the ring's lock: clients see events in id order, and a
        // subscription never misses or repeats one (see `subscribe`).
        let _ = self.tx.send(e);
        id
    }

    /// A new client, resuming after `last_id` when given (its
    /// `Last-Event-ID`); without one it receives only later events.
    pub fn subscribe(&self, last_id: Option<u64>) -> Subscription {
        let r = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        let Some(last) = last_id else {
            return Subscription {
                gap: None,
                backlog: Vec::new(),
                rx,
            };
        };
        let first_kept = r.buf.front().map_or(r.next, |e| e.id);
        let gap = (last + 1 < first_kept).then(|| (last + 1, first_kept - 1));
        let backlog = r.buf.iter().filter(|e| e.id > last).cloned().collect();
        Subscription { gap, backlog, rx }
    }

    /// The id the next event will get.
    pub fn next_id(&self) -> u64 {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_client_resumes_after_its_last_id_without_losing_or_repeating() {
        let bus = EventBus::new(8, 4);
        for i in 0..3 {
            bus.publish("t", json!(i));
        }
        let mut s = bus.subscribe(Some(1));
        assert_eq!(s.gap, None);
        assert_eq!(
            s.backlog.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![2, 3]
        );
        bus.publish("t", json!(3));
        assert_eq!(s.rx.try_recv().expect("live").id, 4);
        // Without an id: only what comes next.
        let mut n = bus.subscribe(None);
        assert!(n.backlog.is_empty());
        bus.publish("t", json!(4));
        assert_eq!(n.rx.try_recv().expect("live").id, 5);
    }

    #[test]
    fn an_id_older_than_the_ring_is_told_as_a_gap() {
        let bus = EventBus::new(3, 4);
        for i in 0..10 {
            bus.publish("t", json!(i));
        }
        let s = bus.subscribe(Some(2));
        assert_eq!(s.gap, Some((3, 7)));
        assert_eq!(
            s.backlog.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![8, 9, 10]
        );
        // Up to date, or from the future: nothing lost, nothing to send.
        let s = bus.subscribe(Some(10));
        assert_eq!((s.gap, s.backlog.len()), (None, 0));
        let s = bus.subscribe(Some(99));
        assert_eq!((s.gap, s.backlog.len()), (None, 0));
    }

    #[test]
    fn a_client_that_does_not_read_lags_and_the_publisher_never_waits() {
        let bus = EventBus::new(16, 4);
        let mut slow = bus.subscribe(None);
        let mut fast = bus.subscribe(None);
        for i in 0..10 {
            bus.publish("t", json!(i));
            assert_eq!(fast.rx.try_recv().expect("fast keeps up").id, i + 1);
        }
        assert!(matches!(
            slow.rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(6))
        ));
        assert_eq!(bus.next_id(), 11);
    }
}
