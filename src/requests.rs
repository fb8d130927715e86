//! The admission decision of a `requests` room: its `rate`'s moment and its
//! token budget (when it has them), then a slot, now or after waiting in line,
//! all within `max_wait`; or `503 QUEUE_REQUIRED` with a retry time.

use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::time::Instant;

use crate::bypass::{self, AppJwt};
use crate::config::{FairBy, Fairness, OnStoreError};
use crate::limits::fair::Turn;
use crate::limits::slots::{Held, NoSlot, RequestSlots};
use crate::request::facts::Facts;
use crate::room::{Limiters, Room};
use crate::store::{Reservation, StoreError};

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

/// Takes a slot of `room` in `turn`, waiting in line up to its `max_wait`;
/// then, holding it, waits out an adaptive room's pause, the room's next
/// moment if it has a `rate`, and room in its token budget. The slots are
/// handed out in turn per client, so the rate's moments and the budget are
/// too; a request that cannot have them in time gives its slot back.
pub async fn admit(room: &Room, limits: &Limiters, turn: Turn) -> Decided {
    let start = Instant::now();
    let mut max_wait = limits.max_wait();
    let refused = |admission| Decided {
        admission,
        waited: start.elapsed(),
        charged: None,
    };
    let held = match enter(room, limits, turn, &mut max_wait).await {
        Ok(held) => held,
        Err(admission) => return refused(admission),
    };
    let counters = room.counters();
    let charged = match limits.budget() {
        None => None,
        Some(budget) => {
            let estimate = budget.settings().estimate;
            let reserved = budget.reserve(estimate, max_wait).await;
            let rejected = &counters.rejected_tokens;
            if let Some(admission) = wait_for(reserved, rejected, room, limits, &mut max_wait).await
            {
                return refused(admission);
            }
            Some(estimate)
        }
    };
    let waited = start.elapsed();
    counters.slot_wait.observe(waited.as_secs_f64());
    counters.admitted.inc();
    Decided {
        admission: Admission::Admitted(held),
        waited,
        charged,
    }
}

/// A slot again for a request whose upstream `429` is held (`retry_429`):
/// in turn, after the room's pause, with a moment of its rate of its own,
/// within `left`; its tokens stay reserved. `Err` is the time to retry after.
pub async fn readmit(
    room: &Room,
    limits: &Limiters,
    turn: Turn,
    left: Duration,
) -> Result<Held, Duration> {
    let mut left = left;
    match enter(room, limits, turn, &mut left).await {
        Ok(held) => Ok(held),
        Err(Admission::Refused(retry)) => Err(retry),
        Err(_) => Err(limits.slots.retry_after()),
    }
}

/// A slot in turn, then the pause and the rate's moment, within `max_wait`
/// (less what they took); `Err` is the answer when they cannot be had.
async fn enter(
    room: &Room,
    limits: &Limiters,
    turn: Turn,
    max_wait: &mut Duration,
) -> Result<Held, Admission> {
    let counters = room.counters();
    let start = Instant::now();
    let held = match limits.slots.try_acquire().await {
        Ok(Some(held)) => Ok(held),
        Ok(None) if max_wait.is_zero() => Err(NoSlot::Full),
        Ok(None) => {
            counters.queued.inc();
            limits.slots.acquire(*max_wait, turn).await
        }
        Err(e) => Err(e),
    };
    let held = match held {
        Ok(held) => held,
        Err(NoSlot::Store(e)) => return Err(store_failed(room, &e, &limits.slots)),
        Err(NoSlot::Full) => {
            counters.rejected_full.inc();
            return Err(Admission::Refused(limits.slots.retry_after()));
        }
    };
    *max_wait = max_wait.saturating_sub(start.elapsed());
    if let Some(pause) = limits
        .adaptive()
        .and_then(|a| a.paused(std::time::Instant::now()))
    {
        let reserved = Ok(if pause <= *max_wait {
            Reservation::Wait(pause)
        } else {
            Reservation::TooFar(pause)
        });
        let rejected = &counters.rejected_upstream;
        if let Some(admission) = wait_for(reserved, rejected, room, limits, max_wait).await {
            return Err(admission);
        }
    }
    if let Some(pace) = limits.pace() {
        let reserved = pace.reserve(*max_wait).await;
        let rejected = &counters.rejected_rate;
        if let Some(admission) = wait_for(reserved, rejected, room, limits, max_wait).await {
            return Err(admission);
        }
    }
    Ok(held)
}

/// Waits for what a reservation (a pause, the rate's moment, the budget's
/// tokens) says, taking it off `max_wait`; `Some` is the answer when it cannot.
async fn wait_for(
    reserved: Result<Reservation, StoreError>,
    rejected: &IntCounter,
    room: &Room,
    limits: &Limiters,
    max_wait: &mut Duration,
) -> Option<Admission> {
    match reserved {
        Ok(Reservation::Wait(wait)) => {
            if !wait.is_zero() {
                room.counters().queued.inc();
                tokio::time::sleep(wait).await;
                *max_wait = max_wait.saturating_sub(wait);
            }
            None
        }
        Ok(Reservation::TooFar(retry)) => {
            rejected.inc();
            Some(Admission::Refused(retry))
        }
        Err(e) => Some(store_failed(room, &e, &limits.slots)),
    }
}

/// What to do with the upstream's answer to a request of a `requests` room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Pass it on.
    Pass,
    /// Pass it on, reading a retry hint from its body (a `429` of an
    /// adaptive room).
    PassReadingHint,
    /// Hold it: give the slot back, and after this long take one again in
    /// turn and send the request again (`retry_429`).
    Retry(Duration),
    /// Drop it: the hint is past `max_wait`, so the client gets the room's
    /// `503 QUEUE_REQUIRED` with this retry time instead (`retry_429`).
    Requeue(Duration),
}

/// Whether a request may be sent again after an upstream `429`.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    /// The route has `retry_429`, the request holds a slot and its body can
    /// be sent again.
    pub allowed: bool,
    /// Times it was sent again already.
    pub done: u32,
    /// What is left of its `max_wait`.
    pub left: Duration,
}

/// The first wait before sending a `429`ed request again when neither a
/// hint nor a smaller adaptive limit paces it; doubled each time.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// The upstream answered `status` (with `headers`) to a request sent at
/// `sent`: an adaptive room's limit follows it, and with `retries` allowed
/// a `429` is held for another try (after its hint; at once in line when
/// the limit just shrank, the line being the backoff; else after a backoff
/// doubling each time), or turned into `503 QUEUE_REQUIRED` when that does
/// not fit in what is left of `max_wait`.
pub fn answered(
    room: &Room,
    limits: &Limiters,
    status: u16,
    headers: &http::HeaderMap,
    sent: std::time::Instant,
    retries: Retries,
) -> Answer {
    let now = std::time::Instant::now();
    let adaptive = limits.adaptive();
    if !matches!(status, 429 | 503) {
        if status < 500
            && let Some(adaptive) = adaptive
        {
            adaptive.healthy(limits.slots.usage().in_use);
        }
        return Answer::Pass;
    }
    let counters = room.counters();
    counters.overloaded.inc();
    let hint = crate::limits::adaptive::retry_hint(headers, std::time::SystemTime::now());
    let shrunk = adaptive.is_some_and(|a| a.overloaded(room.name(), sent, hint, now));
    if status == 429 && retries.allowed {
        let backoff = RETRY_BACKOFF.saturating_mul(2u32.saturating_pow(retries.done.min(16)));
        let delay = hint.unwrap_or(if shrunk { Duration::ZERO } else { backoff });
        if delay <= retries.left {
            counters.retries.inc();
            return Answer::Retry(delay);
        }
        counters.rejected_upstream.inc();
        return Answer::Requeue(delay);
    }
    if status == 429 && adaptive.is_some() && hint.is_none() {
        Answer::PassReadingHint
    } else {
        Answer::Pass
    }
}

/// Whose turn a request takes in its room's line (`fair_by`), and its
/// weight: `priority_weight` if it matches the room's `priority` rules.
/// `session` is the pass session the request carries, looked up only when
/// the room takes turns by session; without one, the client's network counts.
pub fn turn(
    fair: &Fairness,
    facts: &Facts<'_>,
    jwts: &[AppJwt],
    session: impl FnOnce() -> Option<String>,
) -> Turn {
    let by_network = || facts.ip.map(|ip| key(&network(ip)));
    let key = match &fair.by {
        FairBy::None => return Turn::ANYONE,
        FairBy::Client => by_network(),
        FairBy::Session => session().map(|s| key(&s)).or_else(by_network),
        FairBy::Header(name) => facts
            .req
            .headers
            .get(name)
            .map(|v| key(v.as_bytes()))
            .or_else(by_network),
    };
    let weight = if bypass::matches(&fair.priority, facts, jwts) {
        fair.weight
    } else {
        1
    };
    Turn {
        key: key.unwrap_or(0),
        weight,
    }
}

/// A client's network: its IPv4 address, or its IPv6 /64.
fn network(ip: IpAddr) -> [u8; 16] {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            octets
        }
    }
}

/// A turn's key: a hash with this process's random keys, so nobody can
/// pick values that fall on someone else's turn.
fn key(value: &(impl Hash + ?Sized)) -> u64 {
    static HASHER: OnceLock<RandomState> = OnceLock::new();
    HASHER.get_or_init(RandomState::new).hash_one(value)
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
        admit(room, slots, Turn::ANYONE).await
    }

    /// Two clients, one with ten times the callers of the other, each
    /// calling again as soon as its request ends: while both wait, each is
    /// let in as often as the other, at the room's rate.
    #[tokio::test]
    async fn clients_share_a_rate_limited_room_evenly() {
        let f = Arc::new(Fixture::new(
            "[[room]]\nname = \"llm\"\nmode = \"requests\"\ncapacity = 4\nmax_wait = \"30s\"\nrate = \"50/s\"\nfair_by = \"client\"",
            "room = \"llm\"",
        ));
        let admitted = Arc::new(parking_lot::Mutex::new([0u32; 2]));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (client, callers) in [(0usize, 100), (1, 10)] {
            for _ in 0..callers {
                let (f, admitted, stop) = (f.clone(), admitted.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    let room = f.rooms.by_name("llm").unwrap();
                    let Kind::Requests(slots) = room.kind() else {
                        return;
                    };
                    let turn = Turn {
                        key: client as u64 + 1,
                        weight: 1,
                    };
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let decided = admit(room, slots, turn).await;
                        if matches!(decided.admission, Admission::Admitted(_)) {
                            admitted.lock()[client] += 1;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }));
            }
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let [heavy, light] = *admitted.lock();
        for t in tasks {
            t.abort();
        }
        let share = f64::from(light) / f64::from(heavy + light);
        assert!((0.4..=0.6).contains(&share), "heavy {heavy}, light {light}");
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
