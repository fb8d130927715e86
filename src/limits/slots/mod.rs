//! The request slots of a `requests` room: counted by this instance
//! (`local`) or across instances through the store (`shared`). A room holds
//! one [`RequestSlots`] and never needs to know which.

pub mod local;
pub mod shared;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use crate::limits::fair::Turn;
use crate::store::StoreError;

pub use local::{Permit, Slots};
pub use shared::{SharedPermit, SharedSlots};
pub use usage::{HoldTime, NoSlot, Usage};

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
    /// `max_wait` for one to free, served in `turn`.
    pub async fn acquire(&self, max_wait: Duration, turn: Turn) -> Result<Held, NoSlot> {
        match self {
            RequestSlots::Local(s) => s
                .acquire(max_wait, turn)
                .await
                .map(Held::Local)
                .map_err(|_| NoSlot::Full),
            RequestSlots::Shared(s) => s.acquire(max_wait, turn).await.map(Held::Shared),
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
