//! The narrow handles the orchestrator works through, so that a test, the
//! simulator or a cluster deployment can substitute them: OpenFlow to the
//! switches ([`Switches`], [`SwitchLink`]), the knowledge store
//! ([`crate::knowledge::store::Store`]) and the clock
//! ([`crate::knowledge::clock::Clock`]). The topology, host and statistics
//! view is the [`Knowledge`] read side; host daemons are reached over HTTP.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ofp::Message;

use crate::knowledge::clock::{Clock, SystemClock};
use crate::knowledge::state::Knowledge;
use crate::knowledge::store::Store;
use crate::monitor::openflow::{OfError, SwitchHandle};

/// A boxed, sendable future (the traits are object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One connected switch.
pub trait SwitchLink: Send + Sync {
    /// Sends a message that expects no reply.
    fn send(&self, msg: Message) -> BoxFuture<'_, Result<(), OfError>>;
    /// Sends a batch followed by a BARRIER_REQUEST (not awaited).
    fn send_batch(&self, msgs: Vec<Message>) -> BoxFuture<'_, Result<(), OfError>>;
    /// Waits until the switch has processed everything sent before.
    fn barrier(&self) -> BoxFuture<'_, Result<(), OfError>>;
}

impl SwitchLink for SwitchHandle {
    fn send(&self, msg: Message) -> BoxFuture<'_, Result<(), OfError>> {
        Box::pin(SwitchHandle::send(self, msg))
    }
    fn send_batch(&self, msgs: Vec<Message>) -> BoxFuture<'_, Result<(), OfError>> {
        Box::pin(SwitchHandle::send_batch(self, msgs))
    }
    fn barrier(&self) -> BoxFuture<'_, Result<(), OfError>> {
        Box::pin(SwitchHandle::barrier(self))
    }
}

/// The connected switches.
pub trait Switches: Send + Sync {
    /// The switch `dpid`, if connected.
    fn switch(&self, dpid: u64) -> Option<Box<dyn SwitchLink>>;
}

impl Switches for Knowledge {
    fn switch(&self, dpid: u64) -> Option<Box<dyn SwitchLink>> {
        self.switch_handle(dpid)
            .map(|h| Box::new(h) as Box<dyn SwitchLink>)
    }
}

/// Everything the orchestrator writes to or waits on.
#[derive(Clone)]
pub struct Handles {
    /// OpenFlow to the switches.
    pub switches: Arc<dyn Switches>,
    /// Where migrations, reservations and decision outcomes are recorded.
    pub store: Option<Arc<dyn Store>>,
    /// Wall-clock time of records.
    pub clock: Arc<dyn Clock>,
}

impl Handles {
    /// The handles of the running controller: its switches, its store, the
    /// system clock.
    pub fn of(knowledge: &Arc<Knowledge>) -> Self {
        Handles {
            switches: knowledge.clone(),
            store: knowledge.store.clone(),
            clock: Arc::new(SystemClock),
        }
    }
}
