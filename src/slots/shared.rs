//! Request slots shared by every instance through the store: each request in
//! flight holds a lease that its instance renews every third of a lease
//! period, so the slots of an instance that dies come back after one period.
//!
//! Waiting (`max_wait`) is first come, first served among this instance's
//! requests: the head of the local line retries when a local slot frees and
//! every few milliseconds otherwise. Across instances, whoever asks first
//! after a slot frees gets it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::usage::{HoldTime, NoSlot, Usage};
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
    /// This instance's requests waiting for a slot, in arrival order.
    line: tokio::sync::Mutex<()>,
    waiting: AtomicU32,
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
            line: tokio::sync::Mutex::new(()),
            waiting: AtomicU32::new(0),
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
        match self.store.acquire(&self.room, &id).await {
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
    /// instance's line up to `max_wait`.
    pub async fn acquire(self: &Arc<Self>, max_wait: Duration) -> Result<SharedPermit, NoSlot> {
        if max_wait.is_zero() {
            return Err(NoSlot::Full);
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        let Ok(_head) = tokio::time::timeout_at(deadline, self.line.lock()).await else {
            return Err(NoSlot::Full);
        };
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
