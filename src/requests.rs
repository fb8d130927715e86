//! The admission decision of a `requests` room: a slot now, a slot after
//! waiting in line up to `max_wait`, or `503 QUEUE_REQUIRED` with a retry
//! time estimated from how long slots are held.

use std::time::{Duration, Instant};

use crate::config::OnStoreError;
use crate::room::Room;
use crate::slots::{Held, NoSlot, RequestSlots};

/// What happens to a request of a `requests` room.
#[derive(Debug)]
pub enum Admission {
    /// Forward it; the slot is returned when `Held` drops, at the request's end.
    Admitted(Held),
    /// The store failed and the room lets requests through (`on_store_error = "open"`).
    Open,
    /// No slot came free: answer `503 QUEUE_REQUIRED`, to be retried after this long.
    Refused(Duration),
}

/// A decision and the time it took (the wait for a slot).
#[derive(Debug)]
pub struct Decided {
    /// What to do.
    pub admission: Admission,
    /// How long the request waited for it.
    pub waited: Duration,
}

/// Takes a slot of `room`, waiting in line up to its `max_wait`.
pub async fn admit(room: &Room, slots: &RequestSlots) -> Decided {
    let counters = room.counters();
    let start = Instant::now();
    let max_wait = room.max_wait();
    let held = match slots.try_acquire().await {
        Ok(Some(held)) => Ok(held),
        Ok(None) if max_wait.is_zero() => Err(NoSlot::Full),
        Ok(None) => {
            counters.queued.inc();
            slots.acquire(max_wait).await
        }
        Err(e) => Err(e),
    };
    let waited = start.elapsed();
    counters.slot_wait.observe(waited.as_secs_f64());
    let admission = match held {
        Ok(held) => {
            counters.admitted.inc();
            Admission::Admitted(held)
        }
        Err(NoSlot::Store(e)) if room.on_store_error() == OnStoreError::Open => {
            tracing::warn!(room = room.name(), error = %e, "store unavailable; letting the request through (on_store_error = open)");
            counters.store_open.inc();
            Admission::Open
        }
        Err(reason) => {
            match reason {
                NoSlot::Full => counters.rejected_full.inc(),
                NoSlot::Store(_) => counters.rejected_store.inc(),
            }
            Admission::Refused(slots.retry_after())
        }
    };
    Decided { admission, waited }
}
