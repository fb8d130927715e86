//! Where a waiting room's state lives: admitted sessions, the line, the
//! admission rate. Each operation is one atomic step (the memory store holds
//! the room's lock for it; a shared store runs it as one server-side script),
//! so concurrent requests, on one instance or many, can never over-admit or
//! reorder the line.

pub mod memory;
pub mod redis;
mod redis_deployment;
pub mod state_file;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use prometheus::{HistogramVec, IntCounterVec, IntGauge, Registry};

use crate::attribution::Utm;
use crate::config::{self, State};
use crate::metrics;
pub use crate::queue::{Lane, Millis};
use crate::wakeups::Wakeups;

const STORE_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Milliseconds since the UNIX epoch, now.
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An admitted visitor's id: random, so instances need no coordination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub u128);

impl SessionId {
    /// A new random id.
    pub fn random() -> SessionId {
        SessionId(rand::random())
    }

    /// Parses the hex form used in passes.
    pub fn parse(text: &str) -> Option<SessionId> {
        if text.len() != 32 {
            return None;
        }
        u128::from_str_radix(text, 16).ok().map(SessionId)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Settings that can change while running (admin API), shared by all instances.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    /// Most visitors admitted at once.
    pub capacity: u32,
    /// Whether admissions happen.
    pub state: State,
    /// New admissions per second (0: unlimited).
    pub admit_rate: f64,
}

/// A change to `Settings`; absent fields stay.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SettingsPatch {
    /// New capacity.
    pub capacity: Option<u32>,
    /// New state.
    pub state: Option<State>,
    /// New admission rate.
    pub admit_rate: Option<f64>,
}

/// A new visitor, as the store needs to know them.
#[derive(Debug, Clone, Default)]
pub struct Newcomer {
    /// Their lane.
    pub lane: Lane,
    /// The campaign they came from.
    pub utm: Option<Arc<Utm>>,
    /// An API client's `Idempotency-Key`, hashed: the same key gets the
    /// same place (or session) while it lasts.
    pub key: Option<String>,
    /// Their client network, hashed, for `tickets_per_client`.
    pub network: Option<String>,
}

/// Everything a store needs to know about a room.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoomSpec {
    /// Room name.
    pub name: String,
    /// Settings at startup.
    pub settings: Settings,
    /// Sliding session lifetime.
    pub session_ttl: Duration,
    /// Absolute session lifetime.
    pub session_max: Option<Duration>,
    /// How long a reservation waits to be claimed.
    pub claim_window: Duration,
    /// How long a new visitor's place (a session let in at once, or a
    /// ticket) waits for them to come back with their token.
    pub confirm_window: Duration,
    /// Silence after which a ticket is ahead of nobody.
    pub heartbeat_timeout: Duration,
    /// Silence after which a ticket is forgotten.
    pub rejoin_grace: Duration,
    /// Expected visit length before there is data.
    pub avg_session: Duration,
    /// Most live tickets (0: unlimited).
    pub max_queue: u32,
    /// Priority admissions per normal one.
    pub priority_weight: u32,
    /// Tickets one client network may hold (0: no limit).
    pub tickets_per_client: u32,
    /// How long an `Idempotency-Key` gives the same place.
    pub idempotency_ttl: Duration,
    /// How often a waiting visitor polls: until claims are measured, a
    /// turn is expected to be claimed half a poll after its slot frees
    /// (state saved before this field knew none: 0).
    #[serde(default)]
    pub poll_interval: Duration,
}

impl RoomSpec {
    /// The specs of a config's sessions rooms, in config order.
    pub fn of_config(config: &config::Config) -> Vec<RoomSpec> {
        config
            .rooms
            .iter()
            .filter_map(|r| Some(RoomSpec::from_config(&r.name, r.capacity, r.sessions()?)))
            .collect()
    }

    /// The spec of a configured sessions room.
    pub fn from_config(name: &str, capacity: u32, s: &config::Sessions) -> RoomSpec {
        RoomSpec {
            name: name.to_owned(),
            settings: Settings {
                capacity,
                state: s.state,
                admit_rate: s.admit_rate,
            },
            session_ttl: s.session_ttl,
            session_max: s.session_max,
            claim_window: s.claim_window,
            confirm_window: s.confirm_window,
            heartbeat_timeout: s.heartbeat_timeout,
            rejoin_grace: s.rejoin_grace,
            avg_session: s.avg_session,
            max_queue: s.max_queue,
            priority_weight: s.priority_weight,
            tickets_per_client: s.limits.tickets_per_client,
            idempotency_ttl: s.ticket_ttl,
            poll_interval: s.poll_interval,
        }
    }
}

/// How long a visitor can expect to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// Estimated milliseconds until admission.
    pub ms: u64,
    /// Measured from recent admissions (true) or from the configured visit length (false).
    pub known: bool,
}

/// A place that arrived this recently and has not come back with its
/// ticket yet counts in the wait estimate of those behind it (not in their
/// place): in a burst of simultaneous arrivals nobody has polled yet, and
/// without it everyone would be told the wait of place 1. A client that
/// keeps no ticket (a bot) stops counting once this has passed, so a flood
/// lengthens what newcomers are told for no longer.
pub const FRESH: Duration = Duration::from_secs(2);

/// At most this many such places count (a bound on a step's work).
pub const FRESH_MAX: u32 = 1000;

/// The longest wait anteroom tells a visitor. Beyond a day an estimate says
/// more about how little is known (nobody let in for a long time, a room of
/// one with hour-long visits) than about the line.
pub const LONGEST_TOLD: Duration = Duration::from_secs(24 * 3600);

impl Wait {
    /// The estimate to tell, or `None` when it cannot honestly be told.
    pub fn told(&self) -> Option<u64> {
        let longest = u64::try_from(LONGEST_TOLD.as_millis()).unwrap_or(u64::MAX);
        (self.ms <= longest).then_some(self.ms)
    }
}

/// A waiting visitor's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The ticket id to put in the visitor's token.
    pub ticket: String,
    /// When the ticket was handed out (its token is dated so: the same
    /// place, asked for again with an `Idempotency-Key`, gets the same token).
    pub joined: Millis,
    /// Lane.
    pub lane: Lane,
    /// Admissions that come before this visitor's: confirmed places ahead.
    pub ahead: u32,
    /// Places ahead not confirmed yet but fresh (a burst's newest, whose
    /// holders are expected back): counted in the position told and in
    /// the wait, so that the two agree (a bot's places lapse and stop
    /// counting after the confirm window).
    pub unconfirmed_ahead: u32,
    /// `ahead` when the visitor joined (for progress).
    pub ahead_at_join: u32,
    /// Live tickets in both lanes.
    pub queue_length: u32,
    /// Free slots right now.
    pub available: u32,
    /// Estimated wait.
    pub wait: Wait,
    /// The room's state.
    pub state: State,
    /// Whether the ticket counts (its holder came back with it, and solved
    /// the room's challenge if it has one).
    pub confirmed: bool,
}

impl Place {
    /// 1-based place in line, as told: every place the wait counts.
    pub fn position(&self) -> u32 {
        self.ahead_told() + 1
    }

    /// The places ahead, as told (and as the wait counts them).
    pub fn ahead_told(&self) -> u32 {
        self.ahead.saturating_add(self.unconfirmed_ahead)
    }
}

/// What the store knows about an admitted visitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Session id.
    pub id: SessionId,
    /// When admitted.
    pub admitted_at: Millis,
    /// How long the visitor waited in line.
    pub wait_ms: u64,
    /// The campaign they came from.
    pub utm: Option<Arc<Utm>>,
}

/// What a verified pass tells the store of its session, so that a store
/// that lost the session (restarted empty, failed over to a replica that
/// had not caught up) takes it back rather than forgetting a visitor who
/// was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adopt {
    /// When the session began (the pass's `adm`, or its `iat` when older).
    pub admitted_at: Millis,
    /// When the pass expires: it is never taken back after that.
    pub until: Millis,
}

/// The answer to a new visitor.
#[derive(Debug, Clone, PartialEq)]
pub enum Arrival {
    /// In at once.
    Admitted(SessionInfo),
    /// In line.
    Queued(Place),
    /// The same `Idempotency-Key` again: the session it was given.
    AdmittedAgain(SessionInfo),
    /// The same `Idempotency-Key` again: the place it was given.
    QueuedAgain(Place),
    /// The line is at `max_queue`.
    Full,
    /// The client's network holds `tickets_per_client` tickets already.
    Limited,
    /// The room is in maintenance.
    Maintenance,
}

/// The answer to a waiting visitor's heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub enum Polled {
    /// Their turn: admitted now.
    Admitted(SessionInfo),
    /// Still in line.
    Queued(Place),
    /// A slot is held for them, waiting to be claimed by their next poll
    /// (only from [`Store::heartbeat`], which never claims).
    Turn(Place),
    /// The ticket is unknown or was forgotten.
    Expired,
}

/// A room's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Current settings.
    pub settings: Settings,
    /// Admitted sessions.
    pub sessions: u32,
    /// Slots held for the head of the line.
    pub reserved: u32,
    /// Live tickets per lane (priority, normal).
    pub waiting: [u32; 2],
    /// What a newcomer would wait.
    pub wait: Wait,
}

impl Snapshot {
    /// Slots taken (sessions and reservations).
    pub fn in_use(&self) -> u32 {
        self.sessions + self.reserved
    }

    /// Slots free.
    pub fn available(&self) -> u32 {
        self.settings.capacity.saturating_sub(self.in_use())
    }

    /// Live tickets in both lanes.
    pub fn queue_length(&self) -> u32 {
        self.waiting[0] + self.waiting[1]
    }
}

/// What a sweep did, for lifecycle logs and metrics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Swept {
    /// Sessions whose pass lapsed.
    pub sessions_expired: Vec<SessionInfo>,
    /// Campaigns of tickets forgotten after `rejoin_grace`.
    pub tickets_expired: Vec<Option<Arc<Utm>>>,
    /// Reservations that went unclaimed.
    pub reservations_lapsed: u32,
    /// Sessions let in at once whose visitor never came back with the pass.
    pub unconfirmed_sessions: Vec<SessionId>,
    /// Tickets (their ids) whose holder never came back with them.
    pub unconfirmed_tickets: Vec<String>,
}

/// A store that could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No such room (a bug: rooms are registered at startup).
    #[error("unknown room {0:?}")]
    UnknownRoom(String),
    /// The backing service failed or timed out.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// The atomic steps of a waiting room.
#[async_trait]
pub trait Store: Send + Sync {
    /// A new visitor: admitted at once if a slot is free, nobody live is
    /// waiting and the admission rate allows; otherwise queued.
    async fn arrive(&self, room: &str, newcomer: &Newcomer) -> Result<Arrival, StoreError>;

    /// A waiting visitor's heartbeat: keeps (or restores) their place, and
    /// admits them if a slot is reserved for them. A ticket not yet confirmed
    /// is confirmed only if `confirm` (a room with a challenge confirms once
    /// it is solved); otherwise its place is told but does not count.
    async fn poll(&self, room: &str, ticket: &str, confirm: bool) -> Result<Polled, StoreError> {
        let presence = Presence {
            ticket,
            confirm,
            claim: true,
        };
        self.present(room, presence).await
    }

    /// A heartbeat from a waiting visitor's open event stream: keeps their
    /// place as [`Store::poll`] does, but a slot held for them is not
    /// claimed (`Polled::Turn`): the stream cannot set the pass cookie, so
    /// the visitor's next poll claims it.
    async fn heartbeat(
        &self,
        room: &str,
        ticket: &str,
        confirm: bool,
    ) -> Result<Polled, StoreError> {
        let presence = Presence {
            ticket,
            confirm,
            claim: false,
        };
        self.present(room, presence).await
    }

    /// A waiting visitor still there, by a poll or a heartbeat: what a
    /// store implements of both.
    async fn present(&self, room: &str, presence: Presence<'_>) -> Result<Polled, StoreError>;

    /// The event streams this store wakes when it reserves a slot.
    fn wakeups(&self) -> &Arc<Wakeups>;

    /// Delivers the wake-ups of reservations other instances make (a shared
    /// store: its scripts publish them). Returns when the subscription ends,
    /// with why; the memory store has nothing to listen to and never returns.
    async fn listen(&self) -> Result<(), StoreError> {
        std::future::pending().await
    }

    /// An admitted visitor's request: slides the session's expiry. `None`
    /// when the session is gone (released or expired: the store remembers
    /// which for a session's lifetime). A session the store does not know
    /// at all is taken back when `adopt` (from a verified pass) is given
    /// and still valid: counted as a session again, even past capacity.
    async fn touch(
        &self,
        room: &str,
        session: SessionId,
        adopt: Option<Adopt>,
    ) -> Result<Option<SessionInfo>, StoreError>;

    /// Ends a session at once, freeing its slot.
    async fn release(
        &self,
        room: &str,
        session: SessionId,
    ) -> Result<Option<SessionInfo>, StoreError>;

    /// Takes a ticket out of the line.
    async fn leave(&self, room: &str, ticket: &str) -> Result<bool, StoreError>;

    /// Expires what has lapsed and offers free slots to the line.
    async fn sweep(&self, room: &str) -> Result<Swept, StoreError>;

    /// The room's numbers.
    async fn snapshot(&self, room: &str) -> Result<Snapshot, StoreError>;

    /// Changes settings live.
    async fn update(&self, room: &str, patch: SettingsPatch) -> Result<Snapshot, StoreError>;

    /// Adds `count` synthetic waiting visitors at the back of a lane (to
    /// rehearse a spike); they go stale like silent visitors.
    async fn fill(&self, room: &str, lane: Lane, count: u32) -> Result<u32, StoreError>;

    /// Sets the rooms up (a shared store: writes their configuration).
    async fn prepare(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Adopts the rooms of a reloaded config, without I/O (a shared store
    /// writes them at the next `prepare`). A kept room keeps its line and
    /// sessions; if its configuration changed it takes the new settings,
    /// otherwise it keeps what the admin API set. A new room starts empty;
    /// a room no longer listed is forgotten (a shared store leaves its keys
    /// to expire, as other instances may still serve it).
    fn configure(&self, sessions: &[RoomSpec], requests: &[(String, u32)]);

    /// Whether the store answers.
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Name for readiness and metrics.
    fn backend(&self) -> &'static str;
}

/// What reserving a moment of a rate, or tokens of a budget, gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved: the request goes after this wait (zero: now).
    Wait(Duration),
    /// Nothing reserved: it would have to wait longer than it may; this is
    /// when a request would go at once.
    TooFar(Duration),
}

/// A waiting visitor showing they are still there: by their page's poll,
/// or their event stream's heartbeat.
#[derive(Debug, Clone, Copy)]
pub struct Presence<'a> {
    /// Their ticket's id.
    pub ticket: &'a str,
    /// Whether an unconfirmed ticket is confirmed now.
    pub confirm: bool,
    /// Whether a slot held for them is claimed now: a poll claims it; a
    /// heartbeat leaves it for their next poll.
    pub claim: bool,
}

/// The lines of moments a room keeps in the shared store (GCRA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// The moments of its `rate`: a request each.
    Pace,
    /// Its token budget: a token each.
    Budget,
}

/// A reservation asked of one of a room's lines.
#[derive(Debug, Clone, Copy)]
pub struct LineAsk {
    /// Which line.
    pub line: Line,
    /// The time one unit stands for.
    pub per: Duration,
    /// Units asked for.
    pub units: u32,
    /// The longest the asker may wait.
    pub max_wait: Duration,
    /// How much may be taken before its time.
    pub ahead: Duration,
}

/// Request slots shared by every instance: leases that an instance renews
/// while its requests are in flight, so a crashed instance's slots return
/// after one lease period.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Sets an instance's allowance of the room's slots for one lease
    /// period: up to `want`, within the capacity (or, `limited`, the
    /// adaptive limit) less every other instance's allowance.
    async fn allow(&self, room: &str, ask: &AllowanceAsk<'_>) -> Result<Allowance, StoreError>;
    /// Capacity and slots in use across all instances (as each last told).
    async fn usage(&self, room: &str) -> Result<(u32, u32), StoreError>;
    /// Changes the capacity for every instance.
    async fn set_capacity(&self, room: &str, capacity: u32) -> Result<(), StoreError>;
    /// Reserves the next place on one of the room's lines, shared by every
    /// instance: a wait until it, or, when it is further than the ask's
    /// `max_wait` away, when to retry (nothing reserved).
    async fn reserve(&self, room: &str, ask: &LineAsk) -> Result<Reservation, StoreError>;
    /// Corrects a reservation by `delta` tokens (what was used beyond it, or
    /// less than it when negative).
    async fn settle(&self, room: &str, per_token: Duration, delta: i64) -> Result<(), StoreError>;
    /// Moves the room's adaptive limit, shared by every instance; returns it.
    async fn adapt(&self, room: &str, step: Step) -> Result<u32, StoreError>;
    /// How long a lease lasts without renewal.
    fn lease(&self) -> std::time::Duration;
}

/// What an instance asks of a room's slots ([`Leases::allow`]).
#[derive(Debug, Clone, Copy)]
pub struct AllowanceAsk<'a> {
    /// The instance's name in the store.
    pub instance: &'a str,
    /// What its requests hold and wait for: granted less, other instances
    /// are told it is short.
    pub need: u32,
    /// What it would hold (`need` and a headroom).
    pub want: u32,
    /// What its requests hold now (counted in the room's use).
    pub in_flight: u32,
    /// Slots about to be taken from the grant (counted in use if granted).
    pub taking: u32,
    /// The adaptive limit counts too.
    pub limited: bool,
}

/// What the store granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// The instance's allowance now.
    pub granted: u32,
    /// Another instance is short of what it needs: give back what is returned.
    pub contended: bool,
}

/// A move of a shared adaptive limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The upstream was over its limit for a request sent `age` ago: shrink,
    /// not below `min`, unless it already did since that request was sent.
    Down {
        /// How long ago the request was sent.
        age: Duration,
        /// `min_capacity`.
        min: u32,
    },
    /// The upstream kept up: one more.
    Up,
    /// No move: what it is now.
    Keep,
}

/// The store's metric families.
#[derive(Clone)]
pub struct StoreMetrics {
    errors: IntCounterVec,
    latency: HistogramVec,
    up: IntGauge,
}

impl StoreMetrics {
    /// Registers the store's families.
    pub fn register(registry: &Registry) -> Result<StoreMetrics, prometheus::Error> {
        let up = IntGauge::new("store_up", "1 when the last store operation succeeded.")?;
        up.set(1);
        registry.register(Box::new(up.clone()))?;
        let errors = metrics::counter(
            registry,
            "store_errors_total",
            "Store operations that failed or timed out, by operation.",
            &["op"],
        )?;
        for op in OPERATIONS {
            errors.with_label_values(&[op]);
        }
        Ok(StoreMetrics {
            errors,
            latency: metrics::histogram(
                registry,
                "store_operation_seconds",
                "Time per store operation, by operation.",
                &["op"],
                STORE_BUCKETS,
            )?,
            up,
        })
    }
}

/// Every operation `Observed` records, so their series exist from the start.
const OPERATIONS: [&str; 19] = [
    "arrive",
    "poll",
    "heartbeat",
    "touch",
    "release",
    "leave",
    "sweep",
    "snapshot",
    "update",
    "fill",
    "prepare",
    "ping",
    "lease_allow",
    "lease_usage",
    "lease_capacity",
    "lease_pace",
    "lease_budget",
    "lease_settle",
    "lease_adapt",
];

/// A store with its latency, errors and health recorded in metrics.
pub struct Observed<S> {
    inner: S,
    metrics: StoreMetrics,
}

impl<S> Observed<S> {
    /// Wraps a store.
    pub fn new(inner: S, metrics: StoreMetrics) -> Observed<S> {
        Observed { inner, metrics }
    }

    /// The store itself.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn record<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = std::time::Instant::now();
        let result = f.await;
        self.metrics
            .latency
            .with_label_values(&[op])
            .observe(start.elapsed().as_secs_f64());
        if result.is_err() {
            self.metrics.errors.with_label_values(&[op]).inc();
        }
        self.metrics.up.set(i64::from(result.is_ok()));
        result
    }
}

#[async_trait]
impl<S: Store> Store for Observed<S> {
    async fn arrive(&self, room: &str, newcomer: &Newcomer) -> Result<Arrival, StoreError> {
        self.record("arrive", self.inner.arrive(room, newcomer))
            .await
    }
    async fn present(&self, room: &str, presence: Presence<'_>) -> Result<Polled, StoreError> {
        let step = if presence.claim { "poll" } else { "heartbeat" };
        self.record(step, self.inner.present(room, presence)).await
    }
    fn wakeups(&self) -> &Arc<Wakeups> {
        self.inner.wakeups()
    }
    async fn listen(&self) -> Result<(), StoreError> {
        self.inner.listen().await
    }
    async fn touch(
        &self,
        room: &str,
        session: SessionId,
        adopt: Option<Adopt>,
    ) -> Result<Option<SessionInfo>, StoreError> {
        self.record("touch", self.inner.touch(room, session, adopt))
            .await
    }
    async fn release(
        &self,
        room: &str,
        session: SessionId,
    ) -> Result<Option<SessionInfo>, StoreError> {
        self.record("release", self.inner.release(room, session))
            .await
    }
    async fn leave(&self, room: &str, ticket: &str) -> Result<bool, StoreError> {
        self.record("leave", self.inner.leave(room, ticket)).await
    }
    async fn sweep(&self, room: &str) -> Result<Swept, StoreError> {
        self.record("sweep", self.inner.sweep(room)).await
    }
    async fn snapshot(&self, room: &str) -> Result<Snapshot, StoreError> {
        self.record("snapshot", self.inner.snapshot(room)).await
    }
    async fn update(&self, room: &str, patch: SettingsPatch) -> Result<Snapshot, StoreError> {
        self.record("update", self.inner.update(room, patch)).await
    }
    async fn fill(&self, room: &str, lane: Lane, count: u32) -> Result<u32, StoreError> {
        self.record("fill", self.inner.fill(room, lane, count))
            .await
    }
    async fn prepare(&self) -> Result<(), StoreError> {
        self.record("prepare", self.inner.prepare()).await
    }
    fn configure(&self, sessions: &[RoomSpec], requests: &[(String, u32)]) {
        self.inner.configure(sessions, requests);
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.record("ping", self.inner.ping()).await
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}

#[async_trait]
impl<S: Leases> Leases for Observed<S> {
    async fn allow(&self, room: &str, ask: &AllowanceAsk<'_>) -> Result<Allowance, StoreError> {
        self.record("lease_allow", self.inner.allow(room, ask))
            .await
    }
    async fn usage(&self, room: &str) -> Result<(u32, u32), StoreError> {
        self.record("lease_usage", self.inner.usage(room)).await
    }
    async fn set_capacity(&self, room: &str, capacity: u32) -> Result<(), StoreError> {
        self.record("lease_capacity", self.inner.set_capacity(room, capacity))
            .await
    }
    async fn reserve(&self, room: &str, ask: &LineAsk) -> Result<Reservation, StoreError> {
        let step = match ask.line {
            Line::Pace => "lease_pace",
            Line::Budget => "lease_budget",
        };
        self.record(step, self.inner.reserve(room, ask)).await
    }
    async fn settle(&self, room: &str, per_token: Duration, delta: i64) -> Result<(), StoreError> {
        self.record("lease_settle", self.inner.settle(room, per_token, delta))
            .await
    }
    async fn adapt(&self, room: &str, step: Step) -> Result<u32, StoreError> {
        self.record("lease_adapt", self.inner.adapt(room, step))
            .await
    }
    fn lease(&self) -> std::time::Duration {
        self.inner.lease()
    }
}
