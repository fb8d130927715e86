//! The admission decision of a `requests` room: its `rate`'s moment and its
//! token budget (when it has them), then a slot, now or after waiting in line,
//! all within `max_wait`; or `503 QUEUE_REQUIRED` with a retry time.

use std::time::Duration;

use prometheus::IntCounter;
use tokio::time::Instant;

use crate::config::OnStoreError;
use crate::room::Room;
use crate::slots::{Held, NoSlot, RequestSlots};
use crate::store::StoreError;

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
    /// Tokens of the room's budget reserved for it, settled when it ends.
    pub charged: Option<u32>,
}

/// Takes a slot of `room`, waiting in line up to its `max_wait`: first for
/// the room's next moment if it has a `rate`, then for a slot.
pub async fn admit(room: &Room, slots: &RequestSlots) -> Decided {
    let counters = room.counters();
    let start = Instant::now();
    let mut max_wait = room.max_wait();
    if let Some(pace) = room.pace() {
        let reserved = pace.reserve(max_wait).await;
        let rejected = &counters.rejected_rate;
        if let Some(admission) = wait_for(reserved, rejected, room, slots, &mut max_wait).await {
            return Decided {
                admission,
                waited: start.elapsed(),
                charged: None,
            };
        }
    }
    let charged = match room.budget() {
        None => None,
        Some(budget) => {
            let estimate = budget.budget().estimate;
            let reserved = budget.reserve(estimate, max_wait).await;
            let rejected = &counters.rejected_tokens;
            if let Some(admission) = wait_for(reserved, rejected, room, slots, &mut max_wait).await
            {
                return Decided {
                    admission,
                    waited: start.elapsed(),
                    charged: None,
                };
            }
            Some(estimate)
        }
    };
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
        Err(NoSlot::Store(e)) => store_failed(room, &e, slots),
        Err(NoSlot::Full) => {
            counters.rejected_full.inc();
            Admission::Refused(slots.retry_after())
        }
    };
    let charged = match (&admission, room.budget(), charged) {
        // Not forwarded: the estimate goes back.
        (Admission::Refused(_), Some(budget), Some(estimate)) => {
            budget.settle(estimate, 0).await;
            None
        }
        (_, _, charged) => charged,
    };
    Decided {
        admission,
        waited,
        charged,
    }
}

/// Waits for what a reservation (the rate's moment, the budget's tokens)
/// says, taking it off `max_wait`; `Some` is the answer when it cannot.
async fn wait_for(
    reserved: Result<Result<Duration, Duration>, StoreError>,
    rejected: &IntCounter,
    room: &Room,
    slots: &RequestSlots,
    max_wait: &mut Duration,
) -> Option<Admission> {
    match reserved {
        Ok(Ok(wait)) => {
            if !wait.is_zero() {
                room.counters().queued.inc();
                tokio::time::sleep(wait).await;
                *max_wait = max_wait.saturating_sub(wait);
            }
            None
        }
        Ok(Err(retry)) => {
            rejected.inc();
            Some(Admission::Refused(retry))
        }
        Err(e) => Some(store_failed(room, &e, slots)),
    }
}

/// The shared store did not answer: the room's `on_store_error` decides.
fn store_failed(room: &Room, e: &StoreError, slots: &RequestSlots) -> Admission {
    let counters = room.counters();
    if room.on_store_error() == OnStoreError::Open {
        tracing::warn!(room = room.name(), error = %e, "store unavailable; letting the request through (on_store_error = open)");
        counters.store_open.inc();
        Admission::Open
    } else {
        counters.rejected_store.inc();
        Admission::Refused(slots.retry_after())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::room::Kind;
    use crate::testing::Fixture;

    fn room(capacity: u32, max_wait: &str) -> Fixture {
        Fixture::new(
            &format!(
                "[[room]]\nname = \"llm\"\nmode = \"requests\"\ncapacity = {capacity}\nmax_wait = \"{max_wait}\""
            ),
            "room = \"llm\"",
        )
    }

    async fn decide(f: &Fixture) -> Decided {
        let room = f.rooms.by_name("llm").unwrap();
        let Kind::Requests(slots) = room.kind() else {
            panic!("not a requests room")
        };
        admit(room, slots).await
    }

    #[tokio::test]
    async fn admits_up_to_capacity_then_refuses_with_a_retry() {
        let f = room(2, "0s");
        let a = decide(&f).await;
        let b = decide(&f).await;
        assert!(matches!(a.admission, Admission::Admitted(_)));
        assert!(matches!(b.admission, Admission::Admitted(_)));
        let Admission::Refused(retry) = decide(&f).await.admission else {
            panic!("a third request got a slot of two")
        };
        assert!(retry >= Duration::from_millis(100));
        let counters = f.rooms.by_name("llm").unwrap().counters();
        assert_eq!(
            (counters.admitted.get(), counters.rejected_full.get()),
            (2, 1)
        );
        assert_eq!(counters.queued.get(), 0, "max_wait 0: nobody waits");
        // A slot comes back when its request ends.
        drop(a);
        assert!(matches!(decide(&f).await.admission, Admission::Admitted(_)));
    }

    #[tokio::test]
    async fn a_waiter_gets_the_slot_that_frees() {
        let f = Arc::new(room(1, "10s"));
        let held = decide(&f).await;
        let waiter = {
            let f = Arc::clone(&f);
            tokio::spawn(async move { decide(&f).await })
        };
        let room = f.rooms.by_name("llm").unwrap();
        while room.usage().waiting == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        let got = waiter.await.unwrap();
        assert!(matches!(got.admission, Admission::Admitted(_)));
        assert_eq!(room.counters().queued.get(), 1);
    }

    fn paced(rate: &str, max_wait: &str) -> Fixture {
        Fixture::new(
            &format!(
                "[[room]]\nname = \"llm\"\nmode = \"requests\"\ncapacity = 100\nmax_wait = \"{max_wait}\"\nrate = \"{rate}\""
            ),
            "room = \"llm\"",
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_let_in_at_the_rate_in_arrival_order_within_max_wait() {
        let f = Arc::new(paced("4/s", "1s"));
        let burst: Vec<_> = (0..6)
            .map(|_| {
                let f = Arc::clone(&f);
                tokio::spawn(async move { decide(&f).await })
            })
            .collect();
        let mut waited = Vec::new();
        let mut refused = Vec::new();
        for d in burst {
            let d = d.await.unwrap();
            match d.admission {
                Admission::Admitted(_) => waited.push(d.waited.as_millis()),
                Admission::Refused(retry) => refused.push(retry.as_millis()),
                Admission::Open => panic!("no store here to fail"),
            }
        }
        waited.sort_unstable();
        // Moments 250 ms apart; the sixth would wait 1.25 s, past max_wait.
        assert_eq!(waited, [0, 250, 500, 750, 1000]);
        assert_eq!(refused, [1250]);
        let counters = f.rooms.by_name("llm").unwrap().counters();
        assert_eq!(counters.rejected_rate.get(), 1);
        assert_eq!(counters.queued.get(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn without_max_wait_a_request_over_the_rate_is_told_when_to_come_back() {
        let f = paced("2/s", "0s");
        assert!(matches!(decide(&f).await.admission, Admission::Admitted(_)));
        let Admission::Refused(retry) = decide(&f).await.admission else {
            panic!("two requests at once at 2/s with no wait")
        };
        assert_eq!(retry, Duration::from_millis(500));
        tokio::time::advance(retry).await;
        assert!(matches!(decide(&f).await.admission, Admission::Admitted(_)));
    }
}
