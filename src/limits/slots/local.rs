//! Request slots counted by this instance: how many requests of a room are
//! in flight, never more than its capacity (or its adaptive limit, when
//! lower), with a line for those allowed to wait, served in turn per client
//! ([`FairLine`]).
//!
//! Taking and returning a slot is a compare-and-swap on one counter while
//! nobody waits. Only when requests are waiting does a release take the line's
//! lock, to hand its slot directly to the next waiter: a newcomer can never
//! overtake someone already in line, and a freed slot never sits idle while
//! someone waits.
//!
//! A slot is held by a [`Permit`] and returned when the permit is dropped, so
//! every way a request can end (response done, client gone, upstream failed,
//! task cancelled) returns it exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::usage::{HoldTime, Usage};
use crate::limits::fair::{FairLine, Turn};

/// The slots of one room.
#[derive(Debug)]
pub struct Slots {
    capacity: AtomicU32,
    /// The adaptive limit (`u32::MAX` when the room has none).
    limit: AtomicU32,
    in_use: AtomicU32,
    /// Entries in `line`, readable without its lock.
    waiting: AtomicU32,
    line: Mutex<FairLine<oneshot::Sender<Permit>>>,
    hold: HoldTime,
}

/// No slot was free (and, if the request could wait, none freed in time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no free slot")]
pub struct Full;

impl Slots {
    /// Slots for a room of this capacity.
    pub fn new(capacity: u32) -> Arc<Slots> {
        Arc::new(Slots {
            capacity: AtomicU32::new(capacity),
            limit: AtomicU32::new(u32::MAX),
            in_use: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
            line: Mutex::new(FairLine::default()),
            hold: HoldTime::default(),
        })
    }

    /// Takes a slot if one is free and nobody is waiting for one.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        if self.waiting.load(SeqCst) > 0 || !self.try_take() {
            return None;
        }
        Some(Permit::new(self))
    }

    /// Takes a slot, waiting in line for up to `max_wait` when none is free,
    /// served in `turn`. Dropping the returned future leaves the line.
    pub async fn acquire(self: &Arc<Self>, max_wait: Duration, turn: Turn) -> Result<Permit, Full> {
        if let Some(permit) = self.try_acquire() {
            return Ok(permit);
        }
        if max_wait.is_zero() {
            return Err(Full);
        }
        let (tx, mut rx) = oneshot::channel();
        let id = {
            let mut line = self.line.lock();
            // Announce the wait before looking at the counter: a release that
            // decrements it afterwards is then sure to see us (see `release`).
            self.waiting.fetch_add(1, SeqCst);
            if line.is_empty() && self.try_take() {
                self.waiting.fetch_sub(1, SeqCst);
                return Ok(Permit::new(self));
            }
            line.push(turn, tx)
        };
        let mut place = Place {
            slots: self,
            key: turn.key,
            id,
        };
        match tokio::time::timeout(max_wait, &mut rx).await {
            Ok(Ok(permit)) => {
                place.granted();
                Ok(permit)
            }
            // Only a hand-over removes us from the line, and it always sends.
            Ok(Err(_)) => Err(Full),
            Err(_) => {
                if place.leave() {
                    Err(Full)
                } else {
                    // Granted between the deadline and taking the lock.
                    rx.try_recv().map_err(|_| Full)
                }
            }
        }
    }

    /// Changes the capacity at run time. Growing lets waiters in at once;
    /// shrinking takes effect as slots are returned.
    pub fn set_capacity(self: &Arc<Self>, capacity: u32) {
        self.capacity.store(capacity, SeqCst);
        self.admit_waiters();
    }

    /// Sets the adaptive limit under the capacity. Raising it lets waiters
    /// in at once; lowering it takes effect as slots are returned.
    pub fn set_limit(self: &Arc<Self>, limit: u32) {
        self.limit.store(limit, SeqCst);
        self.admit_waiters();
    }

    /// Current capacity, use and line length.
    pub fn usage(&self) -> Usage {
        Usage {
            capacity: self.capacity.load(SeqCst),
            in_use: self.in_use.load(SeqCst),
            waiting: self.waiting.load(SeqCst),
        }
    }

    /// How long slots are held.
    pub fn hold_time(&self) -> &HoldTime {
        &self.hold
    }

    /// The capacity, or the adaptive limit when lower.
    fn cap(&self) -> u32 {
        self.capacity.load(SeqCst).min(self.limit.load(SeqCst))
    }

    fn try_take(&self) -> bool {
        let capacity = self.cap();
        self.in_use
            .fetch_update(SeqCst, SeqCst, |n| (n < capacity).then_some(n + 1))
            .is_ok()
    }

    fn release(self: &Arc<Self>, held: Duration) {
        self.hold.record(held);
        if self.waiting.load(SeqCst) > 0 && self.hand_over() {
            return;
        }
        self.in_use.fetch_sub(1, SeqCst);
        // A waiter that joined between our check and the decrement saw the
        // slot still taken; it is now in the line and must be let in.
        if self.waiting.load(SeqCst) > 0 {
            self.admit_waiters();
        }
    }

    /// Passes a held slot to the next live waiter, without it ever being free.
    fn hand_over(self: &Arc<Self>) -> bool {
        if self.in_use.load(SeqCst) > self.cap() {
            return false; // shrinking: this slot goes away
        }
        let mut line = self.line.lock();
        while let Some(tx) = line.pop() {
            self.waiting.fetch_sub(1, SeqCst);
            match tx.send(Permit::new(self)) {
                Ok(()) => return true,
                // The waiter is gone; the permit must not release a second time.
                Err(permit) => permit.forget(),
            }
        }
        false
    }

    /// Fills free slots from the line, in turn.
    fn admit_waiters(self: &Arc<Self>) {
        let mut line = self.line.lock();
        while !line.is_empty() && self.try_take() {
            let Some(tx) = line.pop() else {
                break;
            };
            self.waiting.fetch_sub(1, SeqCst);
            if let Err(permit) = tx.send(Permit::new(self)) {
                permit.forget();
                self.in_use.fetch_sub(1, SeqCst);
            }
        }
    }
}

/// A waiter's place in line; leaving it (timeout, or the request's future
/// dropped because the client went away) takes the entry out.
struct Place<'a> {
    slots: &'a Arc<Slots>,
    key: u64,
    id: u64,
}

impl Place<'_> {
    /// Takes the entry out; false if a hand-over already did.
    fn leave(&mut self) -> bool {
        if !self.slots.line.lock().remove(self.key, self.id) {
            return false;
        }
        self.slots.waiting.fetch_sub(1, SeqCst);
        self.id = u64::MAX;
        true
    }

    fn granted(&mut self) {
        self.id = u64::MAX;
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if self.id != u64::MAX {
            self.leave();
        }
    }
}

/// One held slot, returned on drop.
#[derive(Debug)]
pub struct Permit {
    slots: Option<Arc<Slots>>,
    since: Instant,
}

impl Permit {
    fn new(slots: &Arc<Slots>) -> Permit {
        Permit {
            slots: Some(Arc::clone(slots)),
            since: Instant::now(),
        }
    }

    /// Drops the permit without returning its slot, for a slot that was
    /// never handed to anyone.
    fn forget(mut self) {
        self.slots = None;
    }

    /// When the slot was taken.
    pub fn since(&self) -> Instant {
        self.since
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            slots.release(self.since.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request that waits up to `max_wait` in `turn` for a slot, already
    /// in line when this returns (`waiting` ahead of it before).
    async fn waiter(
        slots: &Arc<Slots>,
        max_wait: Duration,
        turn: Turn,
    ) -> tokio::task::JoinHandle<Result<(), Full>> {
        let before = slots.usage().waiting;
        let s = slots.clone();
        let task = tokio::spawn(async move { s.acquire(max_wait, turn).await.map(drop) });
        while slots.usage().waiting == before {
            tokio::task::yield_now().await;
        }
        task
    }

    /// Queues one waiter per turn, in order, then frees `first`: the order
    /// (indices into `turns`) in which they were served.
    async fn served(slots: &Arc<Slots>, first: Option<Permit>, turns: &[Turn]) -> Vec<usize> {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, turn) in turns.iter().copied().enumerate() {
            let (s, order) = (slots.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let permit = s.acquire(Duration::from_secs(10), turn).await;
                order.lock().push(i);
                drop(permit);
            }));
            // Join the line one after another.
            while slots.usage().waiting < i as u32 + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        for t in tasks {
            t.await.ok();
        }
        order.lock().clone()
    }

    #[test]
    fn never_more_than_capacity() {
        let slots = Slots::new(2);
        let a = slots.try_acquire();
        let b = slots.try_acquire();
        assert!(a.is_some() && b.is_some());
        assert!(slots.try_acquire().is_none());
        drop(a);
        assert_eq!(slots.usage().in_use, 1);
        assert!(slots.try_acquire().is_some());
        drop(b);
        assert_eq!(slots.usage().in_use, 0);
    }

    #[tokio::test]
    async fn waiters_are_served_in_arrival_order() {
        let slots = Slots::new(1);
        let first = slots.try_acquire();
        let turns = [Turn::ANYONE; 5];
        assert_eq!(served(&slots, first, &turns).await, vec![0, 1, 2, 3, 4]);
        assert_eq!(
            slots.usage(),
            Usage {
                capacity: 1,
                in_use: 0,
                waiting: 0
            }
        );
    }

    #[tokio::test]
    async fn waiters_take_turns_per_client() {
        let slots = Slots::new(1);
        let first = slots.try_acquire();
        // A heavy client queues four, then a light one queues two.
        let turns = [1, 1, 1, 1, 2, 2].map(|key| Turn { key, weight: 1 });
        let keys: Vec<u64> = served(&slots, first, &turns)
            .await
            .into_iter()
            .map(|i| turns[i].key)
            .collect();
        assert_eq!(keys, vec![1, 2, 1, 2, 1, 1]);
    }

    #[tokio::test]
    async fn an_adaptive_limit_caps_under_the_capacity() {
        let slots = Slots::new(3);
        slots.set_limit(1);
        let held = slots.try_acquire();
        assert!(held.is_some());
        assert!(slots.try_acquire().is_none(), "limit 1 of capacity 3");
        let waiter = waiter(&slots, Duration::from_secs(10), Turn::ANYONE).await;
        slots.set_limit(2);
        assert_eq!(
            waiter.await.ok(),
            Some(Ok(())),
            "raising it lets a waiter in"
        );
        drop(held);
        assert_eq!(slots.usage().in_use, 0);
    }

    #[tokio::test]
    async fn newcomer_cannot_overtake_the_line() {
        let slots = Slots::new(1);
        let held = slots.try_acquire();
        let waiter = waiter(&slots, Duration::from_secs(10), Turn::ANYONE).await;
        drop(held);
        // The freed slot went straight to the waiter.
        assert!(slots.try_acquire().is_none());
        assert_eq!(waiter.await.ok(), Some(Ok(())));
        assert_eq!(slots.usage().in_use, 0);
    }

    #[tokio::test]
    async fn timeout_and_cancellation_leave_the_line() {
        let slots = Slots::new(1);
        let held = slots.try_acquire();
        assert_eq!(
            slots
                .acquire(Duration::from_millis(20), Turn::ANYONE)
                .await
                .err(),
            Some(Full)
        );
        let cancelled = waiter(&slots, Duration::from_secs(60), Turn::ANYONE).await;
        cancelled.abort();
        let _ = cancelled.await;
        assert_eq!(slots.usage().waiting, 0);
        drop(held);
        assert_eq!(slots.usage().in_use, 0);
    }

    #[tokio::test]
    async fn growing_capacity_admits_waiters() {
        let slots = Slots::new(1);
        let _held = slots.try_acquire();
        let waiter = waiter(&slots, Duration::from_secs(10), Turn::ANYONE).await;
        slots.set_capacity(2);
        assert_eq!(waiter.await.ok(), Some(Ok(())));
    }

    #[test]
    fn shrinking_capacity_drains() {
        let slots = Slots::new(3);
        let held: Vec<_> = (0..3).filter_map(|_| slots.try_acquire()).collect();
        slots.set_capacity(1);
        assert_eq!(slots.usage().available(), 0);
        drop(held);
        assert_eq!(slots.usage().in_use, 0);
        assert!(slots.try_acquire().is_some());
    }

    #[test]
    fn concurrent_threads_never_exceed_capacity() {
        let slots = Slots::new(4);
        let peak = Arc::new(AtomicU32::new(0));
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        if let Some(p) = slots.try_acquire() {
                            peak.fetch_max(slots.usage().in_use, SeqCst);
                            drop(p);
                        }
                    }
                });
            }
        });
        assert!(peak.load(SeqCst) <= 4);
        assert_eq!(slots.usage().in_use, 0);
    }
}
