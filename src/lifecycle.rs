//! Process lifecycle shared by the proxy, the admin listener and shutdown:
//! how many requests are in flight and whether the process is draining.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Shared between every request, `/readyz` and the shutdown path.
#[derive(Debug, Default)]
pub struct Lifecycle {
    in_flight: AtomicUsize,
    draining: AtomicBool,
    drain_begun: Notify,
}

impl Lifecycle {
    /// A fresh, non-draining lifecycle.
    pub fn new() -> Arc<Lifecycle> {
        Arc::new(Lifecycle::default())
    }

    /// Counts a request until the guard drops.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    /// Requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Marks the process as shutting down: `/readyz` fails so load balancers
    /// stop sending new work while in-flight requests finish.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.drain_begun.notify_waiters();
    }

    /// Resolves once shutdown has begun: what a long request (an event
    /// stream) waits on beside its own work, so that it ends in time.
    pub async fn draining(&self) {
        let begun = self.drain_begun.notified();
        tokio::pin!(begun);
        begun.as_mut().enable();
        if !self.is_draining() {
            begun.await;
        }
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// One request in flight.
#[derive(Debug)]
pub struct InFlight(Arc<Lifecycle>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
