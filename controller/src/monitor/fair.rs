//! Fair queues from the switch connections to the forwarding core.
//!
//! Each connection has its own bounded queue of droppable events
//! (PACKET_IN, PORT_STATUS, FLOW_REMOVED, ERROR); the core takes one event
//! from each non-empty queue in turn (round robin). A switch that floods
//! the controller therefore fills only its own queue and has only its own
//! events dropped, and another switch's event waits behind at most one
//! event of each busy connection. All queues together hold at most
//! `total_cap` events, so memory stays bounded however many switches
//! connect.
//!
//! One shared first-in first-out queue (what this replaced) let a single
//! flooding switch keep it full: every other switch's PACKET_INs, LLDP
//! probes among them, were dropped or waited behind thousands of the
//! flooder's (seen in `tests/stalled_peer.rs`).
//!
//! No I/O and no clock: senders never wait ([`ConnSender::try_send`]), the
//! receiver awaits the next event ([`FairReceiver::recv`], cancel-safe).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

/// Queues above this capacity are shrunk once they run empty (a burst of
/// one connection does not keep its memory).
const SHRINK_ABOVE: usize = 64;

/// Events taken from one connection in a row at most before the next
/// connection's turn. More than one keeps a burst of one switch together
/// (its answers leave in one socket write, as with one shared queue: one
/// event per turn cost 30 % of the flow setups per second over 16
/// switches); few enough that another switch's event waits behind at most
/// this many per busy connection.
pub const QUANTUM: usize = 32;

/// Why an event was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The connection's own queue is full.
    #[error("the connection's event queue is full")]
    ConnFull,
    /// All queues together are full.
    #[error("the event queues are full")]
    TotalFull,
    /// The receiver is gone.
    #[error("the event receiver is gone")]
    Closed,
}

struct Queue<T> {
    events: VecDeque<T>,
    /// In the receiver's rotation (or on its way there).
    scheduled: bool,
}

/// One connection's queue.
struct ConnQueue<T> {
    inner: Mutex<Queue<T>>,
}

impl<T> ConnQueue<T> {
    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Shared<T> {
    ready: mpsc::UnboundedSender<Arc<ConnQueue<T>>>,
    total: Arc<AtomicUsize>,
    total_cap: usize,
    conn_cap: usize,
}

/// Makes a sender for each connection. Cloning is cheap.
pub struct FairQueues<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for FairQueues<T> {
    fn clone(&self) -> Self {
        FairQueues {
            shared: self.shared.clone(),
        }
    }
}

impl<T> std::fmt::Debug for FairQueues<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FairQueues")
            .field("queued", &self.shared.total.load(Ordering::Relaxed))
            .field("total_cap", &self.shared.total_cap)
            .field("conn_cap", &self.shared.conn_cap)
            .finish()
    }
}

/// The sending side of one connection's queue.
pub struct ConnSender<T> {
    queue: Arc<ConnQueue<T>>,
    shared: Arc<Shared<T>>,
}

/// The receiving side: the forwarding core.
pub struct FairReceiver<T> {
    ready: mpsc::UnboundedReceiver<Arc<ConnQueue<T>>>,
    /// Non-empty queues, served front to back; the front one gives up to
    /// [`QUANTUM`] events, then goes to the back if it has more.
    rotation: VecDeque<Arc<ConnQueue<T>>>,
    /// Events the front queue gave in its current turn.
    served: usize,
    /// Events queued in all (the receiver holds no sender, so that it sees
    /// the end when all senders are gone).
    total: Arc<AtomicUsize>,
}

/// Fair queues holding at most `total_cap` events in all and `conn_cap`
/// per connection (both at least 1).
pub fn fair_queues<T>(total_cap: usize, conn_cap: usize) -> (FairQueues<T>, FairReceiver<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let total = Arc::new(AtomicUsize::new(0));
    let shared = Arc::new(Shared {
        ready: tx,
        total: total.clone(),
        total_cap: total_cap.max(1),
        conn_cap: conn_cap.max(1),
    });
    (
        FairQueues { shared },
        FairReceiver {
            ready: rx,
            rotation: VecDeque::new(),
            served: 0,
            total,
        },
    )
}

impl<T> FairQueues<T> {
    /// A new connection's queue.
    pub fn conn(&self) -> ConnSender<T> {
        ConnSender {
            queue: Arc::new(ConnQueue {
                inner: Mutex::new(Queue {
                    events: VecDeque::new(),
                    scheduled: false,
                }),
            }),
            shared: self.shared.clone(),
        }
    }

    /// Events queued in all.
    pub fn queued(&self) -> usize {
        self.shared.total.load(Ordering::Relaxed)
    }
}

impl<T> ConnSender<T> {
    /// Queues `ev` without waiting; gives it back with the reason when its
    /// connection's queue or all queues are full, or the receiver is gone.
    pub fn try_send(&self, ev: T) -> Result<(), (Refused, T)> {
        let s = &self.shared;
        if s.ready.is_closed() {
            return Err((Refused::Closed, ev));
        }
        let mut q = self.queue.lock();
        if q.events.len() >= s.conn_cap {
            return Err((Refused::ConnFull, ev));
        }
        if s.total.fetch_add(1, Ordering::AcqRel) >= s.total_cap {
            s.total.fetch_sub(1, Ordering::AcqRel);
            return Err((Refused::TotalFull, ev));
        }
        q.events.push_back(ev);
        if !q.scheduled {
            if s.ready.send(self.queue.clone()).is_err() {
                s.total.fetch_sub(1, Ordering::AcqRel);
                let ev = q.events.pop_back();
                drop(q);
                // Just pushed: it is there.
                return match ev {
                    Some(ev) => Err((Refused::Closed, ev)),
                    None => Ok(()),
                };
            }
            q.scheduled = true;
        }
        Ok(())
    }

    /// Events in this connection's queue.
    pub fn len(&self) -> usize {
        self.queue.lock().events.len()
    }

    /// Whether this connection's queue is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> FairReceiver<T> {
    /// The next event, one connection after another; None once every
    /// [`FairQueues`] and [`ConnSender`] is gone and all is taken.
    /// Cancel-safe: nothing is taken before an await completes.
    ///
    /// Cooperative like tokio's own channels: each event takes a unit of
    /// the task's budget, so a task that always finds an event still
    /// yields to the runtime now and then (without it the forwarding core
    /// kept a worker thread to itself under a flood, and the tasks queued
    /// behind it, another switch's reader among them, never ran; its
    /// timers never fired either, as they only see a budget renewed when
    /// the task yields).
    pub async fn recv(&mut self) -> Option<T> {
        tokio::task::coop::consume_budget().await;
        loop {
            if let Some(ev) = self.try_recv() {
                return Some(ev);
            }
            // Nothing queued: wait for a queue to become non-empty.
            let q = self.ready.recv().await?;
            self.rotation.push_back(q);
        }
    }

    /// The next event if one is queued now.
    pub fn try_recv(&mut self) -> Option<T> {
        // Queues that became non-empty join the rotation behind those
        // already in it.
        while let Ok(more) = self.ready.try_recv() {
            self.rotation.push_back(more);
        }
        loop {
            let q = self.rotation.front()?.clone();
            let mut g = q.lock();
            let ev = g.events.pop_front();
            if g.events.is_empty() {
                g.scheduled = false;
                if g.events.capacity() > SHRINK_ABOVE {
                    g.events.shrink_to(SHRINK_ABOVE / 4);
                }
                drop(g);
                self.rotation.pop_front();
                self.served = 0;
            } else {
                drop(g);
                self.served += 1;
                if self.served >= QUANTUM {
                    self.rotation.rotate_left(1);
                    self.served = 0;
                }
            }
            if let Some(ev) = ev {
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Some(ev);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_connection_is_served_in_turn() {
        let (qs, mut rx) = fair_queues::<(u8, usize)>(1000, 1000);
        let a = qs.conn();
        let b = qs.conn();
        for i in 0..QUANTUM + 5 {
            a.try_send((b'a', i)).unwrap();
        }
        b.try_send((b'b', 0)).unwrap();
        b.try_send((b'b', 1)).unwrap();
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv()).collect();
        // a's first turn (QUANTUM events), b's (both of its), then a's rest.
        let mut want: Vec<_> = (0..QUANTUM).map(|i| (b'a', i)).collect();
        want.extend([(b'b', 0), (b'b', 1)]);
        want.extend((QUANTUM..QUANTUM + 5).map(|i| (b'a', i)));
        assert_eq!(got, want);
        assert_eq!(qs.queued(), 0);
        assert!(a.is_empty() && b.is_empty());
    }

    /// A flooding connection fills only its own queue: another's events
    /// are all kept and come out right away.
    #[test]
    fn a_flooding_connection_has_only_its_own_events_dropped() {
        let (qs, mut rx) = fair_queues::<(u8, u32)>(1000, 100);
        let flood = qs.conn();
        let quiet = qs.conn();
        let mut refused = 0;
        for i in 0..10_000 {
            if let Err((why, _)) = flood.try_send((b'f', i)) {
                assert_eq!(why, Refused::ConnFull);
                refused += 1;
            }
        }
        assert_eq!(refused, 10_000 - 100);
        quiet.try_send((b'q', 0)).unwrap();
        let first: Vec<_> = (0..=QUANTUM).filter_map(|_| rx.try_recv()).collect();
        assert!(first.contains(&(b'q', 0)), "{first:?}");
    }

    #[test]
    fn the_total_is_bounded_across_connections() {
        let (qs, mut rx) = fair_queues::<u32>(10, 4);
        let conns: Vec<_> = (0..5).map(|_| qs.conn()).collect();
        let mut kept = 0;
        for (i, c) in conns.iter().enumerate() {
            for j in 0..4 {
                match c.try_send((i * 4 + j) as u32) {
                    Ok(()) => kept += 1,
                    Err((why, _)) => assert_eq!(why, Refused::TotalFull),
                }
            }
        }
        assert_eq!(kept, 10);
        assert_eq!(qs.queued(), 10);
        assert!(rx.try_recv().is_some());
        assert_eq!(qs.queued(), 9);
        // Room again.
        conns[4].try_send(99).unwrap();
    }

    #[tokio::test]
    async fn recv_waits_for_an_event_and_ends_when_all_senders_are_gone() {
        let (qs, mut rx) = fair_queues::<u32>(10, 10);
        let c = qs.conn();
        let t = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            c.try_send(7).unwrap();
            drop(c);
            drop(qs);
        });
        assert_eq!(rx.recv().await, Some(7));
        t.await.unwrap();
        assert_eq!(rx.recv().await, None);
    }

    #[test]
    fn a_gone_receiver_refuses() {
        let (qs, rx) = fair_queues::<u32>(10, 10);
        let c = qs.conn();
        drop(rx);
        assert_eq!(c.try_send(1), Err((Refused::Closed, 1)));
        assert_eq!(qs.queued(), 0);
    }

    /// Events sent while the receiver takes them are all delivered, in
    /// order per connection.
    #[test]
    fn nothing_is_lost_between_threads() {
        let (qs, mut rx) = fair_queues::<(usize, u32)>(1 << 20, 1 << 20);
        let senders: Vec<_> = (0..4)
            .map(|k| {
                let c = qs.conn();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        c.try_send((k, i)).unwrap();
                    }
                })
            })
            .collect();
        drop(qs);
        let mut next = [0u32; 4];
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            while let Some((k, i)) = rx.recv().await {
                assert_eq!(i, next[k]);
                next[k] += 1;
            }
        });
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(next, [20_000; 4]);
    }
}
