//! Request slots shared by every instance through the store, without a
//! store round trip per request: each instance holds an *allowance*, a share
//! of the room's capacity leased from the store, and hands it out with a
//! local atomic. The store keeps the allowances within the capacity (or the
//! adaptive limit); an allowance lasts one lease period unless set again, so
//! the share of an instance that dies comes back after one period.
//!
//! Allowances follow demand. An instance asks for more when its own runs
//! out (what its requests hold and wait for, plus a headroom while it is
//! busy), gives back what it no longer needs, and, when another instance is
//! short, gives back each slot its requests return (no headroom) until the
//! other has had its turn: the store then hands freed slots to whoever asks
//! first, as it would leases.
//!
//! Waiting (`max_wait`) is served in turn per client among this instance's
//! requests ([`FairLine`]): one waiter at a time, the head, asks again when
//! a local slot frees and every few milliseconds otherwise, and hands the
//! turn on when it is done. Each instance's line is fair, so clients spread
//! over the instances get fair shares overall.
//!
//! An adaptive room's limit lives in the store beside the capacity, one for
//! every instance: allowances are granted only under both.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use super::usage::{HoldTime, NoSlot, Usage};
use crate::limits::fair::{FairLine, Turn};
use crate::store::{AllowanceAsk, Leases, StoreError};

/// How often the head of the local line asks the store again.
const RETRY: Duration = Duration::from_millis(20);
/// A take that found no allowance within this long after the store said
/// there was none fails without asking again.
const SHORT_FOR: Duration = Duration::from_millis(5);
/// Taken from within this long ago, the instance is busy: it keeps a headroom.
const BUSY_FOR: Duration = Duration::from_secs(1);
/// In-flight counts reach the store at least this often while they change.
const REPORT_EVERY: Duration = Duration::from_millis(200);

/// The allowance and the slots taken from it, in one word so both move together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Count {
    allowance: u32,
    in_flight: u32,
}

impl Count {
    fn of(word: u64) -> Count {
        Count {
            allowance: (word >> 32) as u32,
            in_flight: word as u32,
        }
    }

    fn word(self) -> u64 {
        (u64::from(self.allowance) << 32) | u64::from(self.in_flight)
    }
}

/// The shared slots of one room, as seen by this instance.
pub struct SharedSlots {
    room: String,
    store: Arc<dyn Leases>,
    /// This instance's name in the store.
    instance: String,
    count: AtomicU64,
    /// Times below are in ms since this.
    epoch: Instant,
    /// Until when the allowance is surely still reserved in the store: its
    /// lease began no earlier than the call that set it.
    valid_until: AtomicU64,
    /// When the allowance was last set in the store, and the in-flight
    /// count it was told.
    synced: AtomicU64,
    reported: AtomicU32,
    /// The store said another instance is short: returned slots go back.
    contended: AtomicBool,
    /// Slots left the allowance here that the store still counts as ours.
    returned: AtomicBool,
    /// The last call could not get what this instance's requests need.
    short_at: AtomicU64,
    /// The last call failed (the store is down or slow).
    failed_at: AtomicU64,
    /// Requests waiting to ask the store (behind `sync`).
    asking: AtomicU32,
    last_take: AtomicU64,
    /// One call to the store about the allowance at a time.
    sync: tokio::sync::Mutex<()>,
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
            instance: format!("{:016x}", rand::random::<u64>()),
            count: AtomicU64::new(0),
            epoch: Instant::now(),
            valid_until: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            reported: AtomicU32::new(0),
            contended: AtomicBool::new(false),
            returned: AtomicBool::new(false),
            short_at: AtomicU64::new(0),
            failed_at: AtomicU64::new(0),
            asking: AtomicU32::new(0),
            last_take: AtomicU64::new(0),
            sync: tokio::sync::Mutex::new(()),
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

    fn now(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    fn ms_at(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.store.lease().as_millis()).unwrap_or(u64::MAX)
    }

    fn count(&self) -> Count {
        Count::of(self.count.load(Ordering::Acquire))
    }

    /// Changes the count as `f` says (None: leave it), atomically.
    fn update(&self, f: impl Fn(Count) -> Option<Count>) -> Option<Count> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                f(Count::of(w)).map(Count::word)
            })
            .ok()
            .map(Count::of)
    }

    /// The slots a busy instance keeps above what its requests hold, so a
    /// burst is served locally: an eighth of the capacity, at least one.
    /// None while another instance is short, nor in an adaptive room (its
    /// limit is probed by the requests in flight, so none may sit idle).
    fn headroom(&self, now: u64) -> u32 {
        let busy = now.saturating_sub(self.last_take.load(Ordering::Relaxed))
            < BUSY_FOR.as_millis() as u64;
        if busy && !self.contended.load(Ordering::Relaxed) && !self.limited.load(Ordering::Relaxed)
        {
            (self.usage.lock().capacity / 8).max(1)
        } else {
            0
        }
    }

    /// A slot of the allowance, if one is free and the allowance still held.
    fn take_local(self: &Arc<Self>) -> Option<SharedPermit> {
        let since = Instant::now();
        let now = self.ms_at(since);
        if now >= self.valid_until.load(Ordering::Acquire) {
            return None;
        }
        self.update(|c| {
            (c.in_flight < c.allowance).then_some(Count {
                in_flight: c.in_flight + 1,
                ..c
            })
        })?;
        self.last_take.store(now, Ordering::Relaxed);
        Some(SharedPermit {
            slots: Arc::clone(self),
            since,
        })
    }

    /// A returned slot: back to the allowance, or, while another instance
    /// is short or in an adaptive room (whose limit may have fallen since the
    /// allowance was granted), out of it and at once back to the store.
    fn give_back(self: &Arc<Self>) {
        let contended =
            self.contended.load(Ordering::Relaxed) || self.limited.load(Ordering::Relaxed);
        let before = self.update(|c| {
            let in_flight = c.in_flight.saturating_sub(1);
            let allowance = if contended && c.allowance > in_flight {
                c.allowance - 1
            } else {
                c.allowance
            };
            Some(Count {
                allowance,
                in_flight,
            })
        });
        if contended && before.is_some_and(|c| c.allowance > c.in_flight.saturating_sub(1)) {
            self.returned.store(true, Ordering::Relaxed);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let slots = Arc::clone(self);
                runtime.spawn(async move {
                    let _sync = slots.sync.lock().await;
                    if let Err(e) = slots.set_allowance(0).await {
                        tracing::debug!(room = %slots.room, error = %e, "slot not given back yet");
                    }
                });
            }
        }
        self.freed.notify_one();
    }

    async fn try_take(self: &Arc<Self>) -> Result<Option<SharedPermit>, StoreError> {
        if let Some(permit) = self.take_local() {
            return Ok(Some(permit));
        }
        let short = self.short_at.load(Ordering::Relaxed);
        if short > 0 && self.now().saturating_sub(short) < SHORT_FOR.as_millis() as u64 {
            return Ok(None);
        }
        self.asking.fetch_add(1, Ordering::SeqCst);
        let sync = self.sync.lock().await;
        self.asking.fetch_sub(1, Ordering::SeqCst);
        if let Some(permit) = self.take_local() {
            return Ok(Some(permit));
        }
        // Those who waited behind a call that failed do not each wait for another.
        let failed = self.failed_at.load(Ordering::Relaxed);
        if failed > 0 && self.now().saturating_sub(failed) < RETRY.as_millis() as u64 {
            return Err(StoreError::Unavailable(
                "the store did not answer for the room's slots".to_owned(),
            ));
        }
        self.set_allowance(1).await?;
        let permit = self.take_local();
        drop(sync);
        Ok(permit)
    }

    /// Tells the store what this instance needs now (its requests in
    /// flight and waiting, `extra` more for the caller, and a headroom while
    /// busy and nobody else is short) and takes the allowance it grants.
    /// Called holding `sync`.
    async fn set_allowance(&self, extra: u32) -> Result<(), StoreError> {
        let started = self.now();
        // A slot returned from now on is told at the next call.
        self.returned.store(false, Ordering::Relaxed);
        let before = self.count();
        let limited = self.limited.load(Ordering::Relaxed);
        // The caller (`extra`; a head of the line is one of `waiting`), the
        // line, and those about to ask; in an adaptive room the caller alone,
        // so that every take meets the limit as it is now.
        let need = if limited {
            before.in_flight + extra
        } else {
            before.in_flight
                + extra.max(self.waiting.load(Ordering::SeqCst))
                + self.asking.load(Ordering::SeqCst)
        };
        let mut want = need + self.headroom(started);
        if want < before.allowance {
            // Lowered here first, so what the store frees is not handed out meanwhile.
            let lower = want;
            if let Some(c) = self.update(|c| {
                Some(Count {
                    allowance: lower.max(c.in_flight),
                    ..c
                })
            }) {
                want = lower.max(c.in_flight);
            }
        }
        let ask = AllowanceAsk {
            instance: &self.instance,
            need,
            want,
            in_flight: before.in_flight,
            taking: extra,
            limited,
        };
        let granted = match self.store.allow(&self.room, &ask).await {
            Ok(granted) => granted,
            Err(e) => {
                self.failed_at.store(started.max(1), Ordering::Relaxed);
                return Err(e);
            }
        };
        self.failed_at.store(0, Ordering::Relaxed);
        self.update(|c| {
            Some(Count {
                allowance: granted.granted,
                ..c
            })
        });
        self.contended.store(granted.contended, Ordering::Relaxed);
        let lease = self.lease_ms();
        self.valid_until
            .store(started.saturating_add(lease), Ordering::Release);
        self.synced.store(started, Ordering::Relaxed);
        let taken = extra.min(granted.granted.saturating_sub(before.in_flight));
        self.reported
            .store(before.in_flight + taken, Ordering::Relaxed);
        self.short_at.store(
            if granted.granted < need {
                started.max(1)
            } else {
                0
            },
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// Off the request path, often: renews the allowance, gives back what
    /// is no longer needed (or what another instance is short of), asks for
    /// what waiting requests need, and reports the in-flight count.
    pub async fn rebalance(&self) -> Result<(), StoreError> {
        let Ok(_sync) = self.sync.try_lock() else {
            return Ok(());
        };
        let now = self.now();
        let c = self.count();
        let since = now.saturating_sub(self.synced.load(Ordering::Relaxed));
        let lease = self.lease_ms();
        let keep = c.in_flight + self.headroom(now);
        // An adaptive room's requests ask and give back by themselves:
        // its allowance needs only renewing.
        let limited = self.limited.load(Ordering::Relaxed);
        let due = (c.allowance > 0 && since >= lease / 3)
            || self.returned.load(Ordering::Relaxed)
            || c.allowance > keep
            || (!limited && self.waiting.load(Ordering::SeqCst) > 0)
            || (self.contended.load(Ordering::Relaxed) && since >= lease / 3)
            || (!limited
                && c.in_flight != self.reported.load(Ordering::Relaxed)
                && since >= REPORT_EVERY.as_millis() as u64);
        if due {
            self.set_allowance(0).await?;
        }
        Ok(())
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

/// One slot of the allowance, returned on drop.
pub struct SharedPermit {
    slots: Arc<SharedSlots>,
    since: Instant,
}

impl std::fmt::Debug for SharedPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPermit")
            .field("room", &self.slots.room)
            .finish()
    }
}

impl Drop for SharedPermit {
    fn drop(&mut self) {
        self.slots.hold.record(self.since.elapsed());
        self.slots.give_back();
    }
}
