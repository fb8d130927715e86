//! The request slots of a `requests` room: counted by this instance
//! (`local`) or across instances through the store (`shared`). A room holds
//! one [`RequestSlots`] and never needs to know which.

pub mod local;
pub mod shared;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::store::StoreError;

pub use local::{Permit, Slots};
pub use shared::{SharedPermit, SharedSlots};

/// A snapshot for the capacity endpoint, metrics and Retry-After.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Configured capacity.
    pub capacity: u32,
    /// Slots held now.
    pub in_use: u32,
    /// Requests waiting in line.
    pub waiting: u32,
}

impl Usage {
    /// Free slots (0 when capacity was lowered below the slots in use).
    pub fn available(&self) -> u32 {
        self.capacity.saturating_sub(self.in_use)
    }
}

/// Why no slot was taken.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NoSlot {
    /// Every slot is in use (and none freed within `max_wait`).
    #[error("no free slot")]
    Full,
    /// The store did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long slots are held: an exponential moving average (weight 1/8) in
/// microseconds, 0 before the first release. A lost update under a race
/// only makes the estimate slightly older.
#[derive(Debug, Default)]
pub struct HoldTime(AtomicU64);

impl HoldTime {
    /// Adds one slot's hold time.
    pub fn record(&self, held: Duration) {
        let sample = u64::try_from(held.as_micros()).unwrap_or(u64::MAX).max(1);
        let avg = self.0.load(Ordering::Relaxed);
        let next = if avg == 0 {
            sample
        } else {
            avg - avg / 8 + sample / 8
        };
        self.0.store(next.max(1), Ordering::Relaxed);
    }

    /// How long a newcomer should wait before trying again: one average hold
    /// for each round of `capacity` requests ahead of it (one second per
    /// round before there is data), between 100 ms and 5 minutes.
    pub fn retry_after(&self, usage: Usage) -> Duration {
        let hold_us = match self.0.load(Ordering::Relaxed) {
            0 => 1_000_000,
            us => us,
        };
        let rounds = u64::from(usage.waiting / usage.capacity.max(1)) + 1;
        Duration::from_micros(hold_us.saturating_mul(rounds))
            .clamp(Duration::from_millis(100), Duration::from_secs(300))
    }
}

/// The slots of one `requests` room.
pub enum RequestSlots {
    /// Counted by this instance.
    Local(Arc<Slots>),
    /// Counted across instances by the store.
    Shared(Arc<SharedSlots>),
}

/// One held slot, returned when dropped.
#[derive(Debug)]
pub enum Held {
    /// A local slot.
    Local(Permit),
    /// A lease in the store.
    Shared(SharedPermit),
}

impl RequestSlots {
    /// A free slot now, if nobody is waiting for one.
    pub async fn try_acquire(&self) -> Result<Option<Held>, NoSlot> {
        Ok(match self {
            RequestSlots::Local(s) => s.try_acquire().map(Held::Local),
            RequestSlots::Shared(s) => s.try_acquire().await?.map(Held::Shared),
        })
    }

    /// A slot after `try_acquire` found none, waiting in line up to
    /// `max_wait` for one to free.
    pub async fn acquire(&self, max_wait: Duration) -> Result<Held, NoSlot> {
        match self {
            RequestSlots::Local(s) => s
                .acquire(max_wait)
                .await
                .map(Held::Local)
                .map_err(|_| NoSlot::Full),
            RequestSlots::Shared(s) => s.acquire(max_wait).await.map(Held::Shared),
        }
    }

    /// Capacity, use and line (for shared slots: as last read from the store).
    pub fn usage(&self) -> Usage {
        match self {
            RequestSlots::Local(s) => s.usage(),
            RequestSlots::Shared(s) => s.usage(),
        }
    }

    /// Reads capacity and use afresh where they live elsewhere.
    pub async fn refresh(&self) -> Result<Usage, StoreError> {
        match self {
            RequestSlots::Local(s) => Ok(s.usage()),
            RequestSlots::Shared(s) => s.refresh().await,
        }
    }

    /// Changes the capacity (for shared slots: for every instance).
    pub async fn set_capacity(&self, capacity: u32) -> Result<(), StoreError> {
        match self {
            RequestSlots::Local(s) => {
                s.set_capacity(capacity);
                Ok(())
            }
            RequestSlots::Shared(s) => s.set_capacity(capacity).await,
        }
    }

    /// How long a request that found no slot should wait before trying again.
    pub fn retry_after(&self) -> Duration {
        let hold = match self {
            RequestSlots::Local(s) => s.hold_time(),
            RequestSlots::Shared(s) => s.hold_time(),
        };
        hold.retry_after(self.usage())
    }
}
