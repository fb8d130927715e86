//! A `requests` room's `rate`: requests let in at evenly spaced moments, as
//! a line. It is GCRA (the generic cell rate algorithm, as in `governor` and
//! redis-cell) used as a reservation: each request takes the next free
//! moment, `interval` after the one before, and waits for it if it comes
//! within `max_wait`; otherwise it is told when a request would go at once.
//! Reservations are taken in arrival order, so the line is first come,
//! first served, like the slots' line it precedes. (`governor` answers
//! "not before T" but does not reserve the moment, so waiters would wake
//! together and race for it.)

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::{Rate, TokenBudget};
use crate::store::{Leases, Line as StoreLine, LineAsk, Reservation, StoreError};

/// A limit of a room (its rate, its token budget), kept by this instance,
/// or in the shared store: one for every instance, on the store's clock.
pub enum Kept<L, S> {
    /// This instance's.
    Local(L),
    /// Every instance's, through the store.
    Shared {
        /// The limit's settings.
        settings: S,
        /// The room's name in the store.
        room: String,
        /// The store.
        store: Arc<dyn Leases>,
    },
}

/// A limit kept by this instance, made from its settings.
pub trait Local {
    /// What the file says of it.
    type Settings: Copy + PartialEq;
    /// The limit, with nothing taken yet.
    fn new(settings: Self::Settings) -> Self;
    /// Its settings.
    fn settings(&self) -> Self::Settings;
    /// Reserves `units` on its line, as [`Pace::reserve`] does one.
    fn reserve_units(&self, units: u32, now: Instant, max_wait: Duration) -> Reservation;
    /// Which of the room's lines it is in the shared store.
    const LINE: StoreLine;
    /// The time one unit stands for.
    fn per(settings: Self::Settings) -> Duration;
    /// How much may be taken before its time.
    fn ahead(settings: Self::Settings) -> Duration;

    /// The same reservation asked of the shared store.
    fn ask(settings: Self::Settings, units: u32, max_wait: Duration) -> LineAsk {
        LineAsk {
            line: Self::LINE,
            per: Self::per(settings),
            units,
            max_wait,
            ahead: Self::ahead(settings),
        }
    }
}

impl<L: Local> Kept<L, L::Settings> {
    /// The limit with these settings: in the store when it is shared, else
    /// this instance's, kept from `before` (the same room before a reload)
    /// while its settings are the same, so what it reserved stays.
    pub fn keep(
        settings: L::Settings,
        room: &str,
        leases: Option<&Arc<dyn Leases>>,
        before: Option<&Arc<Self>>,
    ) -> Arc<Self> {
        match leases {
            Some(store) => Arc::new(Kept::Shared {
                settings,
                room: room.to_owned(),
                store: Arc::clone(store),
            }),
            None => before
                .filter(|b| matches!(&***b, Kept::Local(l) if l.settings() == settings))
                .map_or_else(|| Arc::new(Kept::Local(L::new(settings))), Arc::clone),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> L::Settings {
        match self {
            Kept::Local(l) => l.settings(),
            Kept::Shared { settings, .. } => *settings,
        }
    }

    /// Reserves `units` here, or asks the store, which may fail.
    async fn reserve_units(
        &self,
        units: u32,
        max_wait: Duration,
    ) -> Result<Reservation, StoreError> {
        match self {
            Kept::Local(l) => Ok(l.reserve_units(units, Instant::now(), max_wait)),
            Kept::Shared {
                settings,
                room,
                store,
            } => {
                store
                    .reserve(room, &L::ask(*settings, units, max_wait))
                    .await
            }
        }
    }
}

/// The shortest window a rate is kept over: a rate is never more than its
/// count in any `RATE_WINDOW` (plus one). Below one request per window the
/// moments are evenly spaced, none taken early; above it, the requests of
/// one window may come together. Without it a fast rate (100,000/s: a
/// moment every 10 µs) would turn away every request that arrives within
/// 10 µs of another, which concurrent clients do all the time.
pub const RATE_WINDOW: Duration = Duration::from_millis(10);

/// A room's rate: its line of moments.
pub type Rated = Kept<Pace, Rate>;

impl Rated {
    /// Reserves a request's moment, as [`Pace::reserve`]; a shared rate asks
    /// the store, which may fail.
    pub async fn reserve(&self, max_wait: Duration) -> Result<Reservation, StoreError> {
        self.reserve_units(1, max_wait).await
    }
}

/// A line of moments (GCRA's theoretical arrival time): each unit takes
/// `per`, and up to `ahead` may be taken before its time.
#[derive(Debug)]
struct Line {
    per: Duration,
    ahead: Duration,
    /// The moment everything reserved so far is paid for.
    next: Mutex<Option<Instant>>,
}

impl Line {
    fn new(per: Duration, ahead: Duration) -> Line {
        Line {
            per,
            ahead,
            next: Mutex::new(None),
        }
    }

    fn reserve(&self, units: u32, now: Instant, max_wait: Duration) -> Reservation {
        let mut next = self.next.lock();
        let paid = next.map_or(now, |n| n.max(now)) + self.per * units;
        let at = paid.checked_sub(self.ahead).map_or(now, |t| t.max(now));
        let wait = at - now;
        if wait > max_wait {
            return Reservation::TooFar(wait);
        }
        *next = Some(paid);
        Reservation::Wait(wait)
    }

    fn settle(&self, reserved: u32, used: u64) {
        let mut next = self.next.lock();
        let Some(n) = *next else { return };
        let used = u32::try_from(used).unwrap_or(u32::MAX);
        *next = Some(if used >= reserved {
            n + self.per * (used - reserved)
        } else {
            n.checked_sub(self.per * (reserved - used)).unwrap_or(n)
        });
    }
}

/// The moments of one room's rate: a [`Line`] of one request each, none
/// taken early.
#[derive(Debug)]
pub struct Pace {
    rate: Rate,
    line: Line,
}

impl Local for Pace {
    type Settings = Rate;

    /// A rate with its first moment free now.
    fn new(rate: Rate) -> Pace {
        Pace {
            rate,
            line: Line::new(Self::per(rate), Self::ahead(rate)),
        }
    }

    fn settings(&self) -> Rate {
        self.rate
    }

    fn reserve_units(&self, units: u32, now: Instant, max_wait: Duration) -> Reservation {
        self.line.reserve(units, now, max_wait)
    }

    const LINE: StoreLine = StoreLine::Pace;

    fn per(rate: Rate) -> Duration {
        rate.interval()
    }

    fn ahead(rate: Rate) -> Duration {
        rate.interval().max(RATE_WINDOW)
    }
}

impl Pace {
    /// Reserves this request's moment: a wait until it (zero: now), or
    /// when it would have to wait longer than `max_wait`, when a request
    /// would go at once (nothing reserved).
    pub fn reserve(&self, now: Instant, max_wait: Duration) -> Reservation {
        self.line.reserve(1, now, max_wait)
    }
}

/// A `requests` room's `tokens_per_minute`: a weighted [`Pace`] in which
/// each token is a moment of `60 s / tokens_per_minute`, and up to a minute's
/// worth may be spent at once. A request reserves its estimate when it is let
/// in; when it ends, the difference to what its response reported is given
/// back or taken.
#[derive(Debug)]
pub struct Budget {
    budget: TokenBudget,
    line: Line,
}

/// How much may be spent ahead: a minute's worth.
const BUDGET_WINDOW: Duration = Duration::from_secs(60);

impl Local for Budget {
    type Settings = TokenBudget;

    /// A full budget.
    fn new(budget: TokenBudget) -> Budget {
        Budget {
            budget,
            line: Line::new(Self::per(budget), Self::ahead(budget)),
        }
    }

    fn settings(&self) -> TokenBudget {
        self.budget
    }

    fn reserve_units(&self, tokens: u32, now: Instant, max_wait: Duration) -> Reservation {
        self.line.reserve(tokens, now, max_wait)
    }

    const LINE: StoreLine = StoreLine::Budget;

    fn per(budget: TokenBudget) -> Duration {
        per_token(budget)
    }

    fn ahead(_: TokenBudget) -> Duration {
        BUDGET_WINDOW
    }
}

impl Budget {
    /// Reserves `tokens`: `Ok(wait)` until they are there (zero: now), or
    /// `Err(retry)` when that is further than `max_wait` away (nothing taken).
    pub fn reserve(&self, tokens: u32, now: Instant, max_wait: Duration) -> Reservation {
        self.line.reserve(tokens, now, max_wait)
    }

    /// Corrects a reservation by what was really used.
    pub fn settle(&self, reserved: u32, used: u64) {
        self.line.settle(reserved, used);
    }
}

/// The time one token of the budget stands for.
fn per_token(budget: TokenBudget) -> Duration {
    BUDGET_WINDOW / budget.per_minute.max(1)
}

/// A room's token budget.
pub type Budgeted = Kept<Budget, TokenBudget>;

impl Budgeted {
    /// Reserves `tokens`, as [`Budget::reserve`]; a shared budget asks the
    /// store, which may fail.
    pub async fn reserve(
        &self,
        tokens: u32,
        max_wait: Duration,
    ) -> Result<Reservation, StoreError> {
        self.reserve_units(tokens, max_wait).await
    }

    /// Corrects a reservation, as [`Budget::settle`]. A store that does not
    /// answer loses the correction (logged): the budget errs by it once.
    pub async fn settle(&self, reserved: u32, used: u64) {
        match self {
            Kept::Local(b) => b.settle(reserved, used),
            Kept::Shared {
                settings,
                room,
                store,
            } => {
                let per_token = per_token(*settings);
                let delta = i64::try_from(used).unwrap_or(i64::MAX) - i64::from(reserved);
                if let Err(e) = store.settle(room, per_token, delta).await {
                    tracing::warn!(room = %room, error = %e, delta, "token budget not corrected: the store did not answer");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(text: &str) -> Pace {
        Pace::new(Rate::parse(text).unwrap())
    }

    #[test]
    fn rates_parse_with_their_unit() {
        assert_eq!(
            Rate::parse("60/m").unwrap().interval(),
            Duration::from_secs(1)
        );
        assert_eq!(
            Rate::parse("4/s").unwrap().interval(),
            Duration::from_millis(250)
        );
        assert_eq!(
            Rate::parse(" 3600 / h ").unwrap().interval(),
            Duration::from_secs(1)
        );
        for bad in ["60", "0/m", "60/d", "-1/s", "x/s", "2000000/s", ""] {
            assert!(Rate::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn requests_take_evenly_spaced_moments_in_arrival_order() {
        let p = pace("4/s");
        let t = Instant::now();
        let max = Duration::from_secs(1);
        let waits: Vec<_> = (0..4).map(|_| p.reserve(t, max)).collect();
        let ms = [0, 250, 500, 750].map(|ms| Reservation::Wait(Duration::from_millis(ms)));
        assert_eq!(waits, ms);
        // The fifth would wait 1 s, which is max_wait: still in.
        assert_eq!(p.reserve(t, max), Reservation::Wait(Duration::from_secs(1)));
        // The sixth would wait longer: told when to come back, nothing reserved.
        assert_eq!(
            p.reserve(t, max),
            Reservation::TooFar(Duration::from_millis(1250))
        );
        assert_eq!(
            p.reserve(t, max),
            Reservation::TooFar(Duration::from_millis(1250))
        );
    }

    #[test]
    fn a_budget_spends_a_minute_at_once_then_waits_for_what_was_used() {
        let b = Budget::new(TokenBudget {
            per_minute: 6000,
            estimate: 1000,
        });
        let t = Instant::now();
        // Six estimates fit the minute; a seventh needs 1,000 tokens' time: 10 s.
        for _ in 0..6 {
            assert_eq!(
                b.reserve(1000, t, Duration::ZERO),
                Reservation::Wait(Duration::ZERO)
            );
        }
        assert_eq!(
            b.reserve(1000, t, Duration::ZERO),
            Reservation::TooFar(Duration::from_secs(10))
        );
        // Two of them used only 500: 1,000 tokens come back at once.
        b.settle(1000, 500);
        b.settle(1000, 500);
        assert_eq!(
            b.reserve(1000, t, Duration::ZERO),
            Reservation::Wait(Duration::ZERO)
        );
        // One used 4,000: 3,000 more are owed, 30 s before the next estimate.
        b.settle(1000, 4000);
        assert_eq!(
            b.reserve(1000, t, Duration::ZERO),
            Reservation::TooFar(Duration::from_secs(40))
        );
    }

    #[test]
    fn an_idle_rate_does_not_bank_a_burst() {
        let p = pace("2/s");
        let t = Instant::now();
        assert_eq!(
            p.reserve(t, Duration::ZERO),
            Reservation::Wait(Duration::ZERO)
        );
        // Ten seconds of silence: the next goes at once, the one after waits.
        let later = t + Duration::from_secs(10);
        assert_eq!(
            p.reserve(later, Duration::ZERO),
            Reservation::Wait(Duration::ZERO)
        );
        assert_eq!(
            p.reserve(later, Duration::ZERO),
            Reservation::TooFar(Duration::from_millis(500))
        );
    }
}
