//! What a room's slots are doing, shared by both kinds of slots: how many are
//! in use, how long they are held, and why none was free.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::store::StoreError;

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
