//! Request slots shared by every instance through the store: each request in
//! flight holds a lease that its instance renews every third of a lease
//! period, so the slots of an instance that dies come back after one period.
//!
//! Waiting (`max_wait`) is served in turn per client among this instance's
//! requests ([`FairLine`]): one waiter at a time, the head, asks the store
//! again when a local slot frees and every few milliseconds otherwise, and
//! hands the turn on when it is done. Across instances, whoever asks first
//! after a slot frees gets it; each instance's line is fair, so clients
//! spread over the instances get fair shares overall.
//!
//! An adaptive room's limit lives in the store beside the capacity, one for
//! every instance: a lease is taken only under both.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use super::usage::{HoldTime, NoSlot, Usage};
use crate::fair::{FairLine, Turn};
use crate::store::{Leases, StoreError};

/// How often the head of the local line asks the store again.
const RETRY: Duration = Duration::from_millis(20);

/// The shared slots of one room, as seen by this instance.
pub struct SharedSlots {
    room: String,
    store: Arc<dyn Leases>,
    instance: u64,
    next_id: AtomicU64,
    /// Leases held by this instance, renewed in the background.
    held: Mutex<HashSet<String>>,
    /// This instance's requests waiting for the head's turn.
    line: Mutex<Line>,
    waiting: AtomicU32,
    /// The room is adaptive: the store's limit counts too.
    limited: AtomicBool,
    freed: Notify,
    /// Capacity and use across instances, as last read.
    usage: Mutex<Usage>,
    hold: HoldTime,
}

impl SharedSlots {
    /// Slots of `room` in the store.
    pub fn new(room: &str, capacity: u32, store: Arc<dyn Leases>) -> Arc<SharedSlots> {
        Arc::new(SharedSlots {
            room: room.to_owned(),
            store,
            instance: rand::random(),
            next_id: AtomicU64::new(0),
            held: Mutex::new(HashSet::new()),
            line: Mutex::new(Line::default()),
            waiting: AtomicU32::new(0),
            limited: AtomicBool::new(false),
            freed: Notify::new(),
            usage: Mutex::new(Usage {
                capacity,
                in_use: 0,
                waiting: 0,
            }),
            hold: HoldTime::default(),
        })
    }

    async fn try_take(self: &Arc<Self>) -> Result<Option<SharedPermit>, StoreError> {
        let id = format!(
            "{:016x}-{:x}",
            self.instance,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        self.held.lock().insert(id.clone());
        let limited = self.limited.load(Ordering::Relaxed);
        match self.store.acquire(&self.room, &id, limited).await {
            Ok(true) => Ok(Some(SharedPermit {
                slots: Arc::clone(self),
                id,
                since: Instant::now(),
            })),
            other => {
                self.held.lock().remove(&id);
                other.map(|_| None)
            }
        }
    }

    /// A free slot now, if none of this instance's requests is waiting for one.
    pub async fn try_acquire(self: &Arc<Self>) -> Result<Option<SharedPermit>, StoreError> {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            return Ok(None);
        }
        self.try_take().await
    }

    /// Takes a slot after `try_acquire` found none, waiting in this
    /// instance's line up to `max_wait`, served in `turn`.
    pub async fn acquire(
        self: &Arc<Self>,
        max_wait: Duration,
        turn: Turn,
    ) -> Result<SharedPermit, NoSlot> {
        if max_wait.is_zero() {
            return Err(NoSlot::Full);
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        let queued = {
            let mut line = self.line.lock();
            if line.busy {
                let (tx, rx) = oneshot::channel();
                Some((line.waiters.push(turn, tx), rx))
            } else {
                line.busy = true;
                None
            }
        };
        if let Some((id, rx)) = queued {
            let mut place = Place {
                slots: self,
                key: turn.key,
                id: Some(id),
                rx,
            };
            if tokio::time::timeout_at(deadline, &mut place.rx)
                .await
                .is_err()
            {
                // Out of time; if the turn came meanwhile, `place` hands it on.
                return Err(NoSlot::Full);
            }
            place.id = None;
        }
        let _head = Head(self);
        loop {
            if let Some(permit) = self.try_take().await? {
                return Ok(permit);
            }
            tokio::select! {
                _ = self.freed.notified() => {}
                _ = tokio::time::sleep(RETRY) => {}
                _ = tokio::time::sleep_until(deadline) => return Err(NoSlot::Full),
            }
        }
    }

    /// The store the leases are in.
    pub fn store(&self) -> Arc<dyn Leases> {
        Arc::clone(&self.store)
    }

    /// Whether the store's adaptive limit counts too.
    pub fn set_limited(&self, limited: bool) {
        self.limited.store(limited, Ordering::Relaxed);
    }

    /// Capacity, use and this instance's line, as last read from the store.
    pub fn usage(&self) -> Usage {
        let mut usage = *self.usage.lock();
        usage.waiting = self.waiting.load(Ordering::SeqCst);
        usage
    }

    /// Reads the current capacity and use from the store.
    pub async fn refresh(&self) -> Result<Usage, StoreError> {
        let (capacity, in_use) = self.store.usage(&self.room).await?;
        let mut usage = self.usage.lock();
        usage.capacity = capacity;
        usage.in_use = in_use;
        Ok(*usage)
    }

    /// Extends every lease this instance holds.
    pub async fn renew(&self) -> Result<(), StoreError> {
        let ids: Vec<String> = self.held.lock().iter().cloned().collect();
        self.store.renew(&self.room, &ids).await
    }

    /// Changes the capacity for every instance.
    pub async fn set_capacity(&self, capacity: u32) -> Result<(), StoreError> {
        self.store.set_capacity(&self.room, capacity).await?;
        self.usage.lock().capacity = capacity;
        Ok(())
    }

    /// How long slots are held.
    pub fn hold_time(&self) -> &HoldTime {
        &self.hold
    }

    /// How long a lease lasts without renewal.
    pub fn lease(&self) -> Duration {
        self.store.lease()
    }
}

/// The line behind the head: who asks the store next.
#[derive(Default)]
struct Line {
    /// A head is asking the store.
    busy: bool,
    waiters: FairLine<oneshot::Sender<()>>,
}

/// The waiter asking the store; when done (a lease, out of time, or gone)
/// it hands the turn to the next live waiter.
struct Head<'a>(&'a SharedSlots);

impl Drop for Head<'_> {
    fn drop(&mut self) {
        self.0.pass_turn();
    }
}

impl SharedSlots {
    fn pass_turn(&self) {
        let mut line = self.line.lock();
        while let Some(next) = line.waiters.pop() {
            if next.send(()).is_ok() {
                return;
            }
        }
        line.busy = false;
    }
}

/// A waiter's place behind the head; leaving takes it out, or hands on a
/// turn that arrived as it left (the receiver lives as long as the place,
/// so a turn handed to it is never lost).
struct Place<'a> {
    slots: &'a SharedSlots,
    key: u64,
    id: Option<u64>,
    rx: oneshot::Receiver<()>,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id
            && !self.slots.line.lock().waiters.remove(self.key, id)
        {
            self.slots.pass_turn();
        }
    }
}

struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One held lease, returned on drop.
pub struct SharedPermit {
    slots: Arc<SharedSlots>,
    id: String,
    since: Instant,
}

impl std::fmt::Debug for SharedPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPermit")
            .field("room", &self.slots.room)
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for SharedPermit {
    fn drop(&mut self) {
        let slots = Arc::clone(&self.slots);
        let id = std::mem::take(&mut self.id);
        slots.hold.record(self.since.elapsed());
        slots.held.lock().remove(&id);
        // Returned in the background; if that fails the lease lapses on its own.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = slots.store.release(&slots.room, &id).await {
                    tracing::debug!(room = %slots.room, error = %e, "lease not returned; it lapses");
                }
                slots.freed.notify_one();
            });
        }
    }
}
