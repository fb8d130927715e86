//! Rooms: a named capacity shared by the routes that refer to it. A
//! `requests` room counts requests in flight with slots; a `sessions` room is
//! a waiting room whose state lives in the store. The room's counters and
//! gauges live here too, for both kinds.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use crate::clients::{ClientLimits, Limit};
use crate::config::{self, OnStoreError, RoomMode, Rules, State};
use crate::limits::adaptive::{Adapted, Adaptive};
use crate::limits::pace::{Budgeted, Rated};
use crate::limits::slots::{RequestSlots, SharedSlots, Slots, Usage};
use crate::limits::token_usage::UsageKeys;
use crate::metrics;
use crate::page::{Page, Template};
use crate::queue::Lane;
use crate::store::{Leases, RoomSpec, Snapshot, Wait};

const WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// One room and its live state.
pub struct Room {
    name: String,
    /// The capacity in the file (the live one may differ after an admin change).
    capacity: u32,
    bypass: Rules,
    on_store_error: OnStoreError,
    kind: Kind,
    counters: RoomCounters,
}

/// What a room limits, with the state of that kind of room.
pub enum Kind {
    /// Requests in flight.
    Requests(Box<Limiters>),
    /// Admitted visitors, with a waiting room.
    Sessions(Box<WaitingRoom>),
}

/// A `requests` room's limiters: its slots, and the rate, token budget and
/// adaptive limit it may have besides.
pub struct Limiters {
    /// Settings from the file.
    pub config: config::Requests,
    /// The requests in flight.
    pub slots: RequestSlots,
    /// `rate`.
    pace: Option<Arc<Rated>>,
    /// `tokens_per_minute`.
    budget: Option<Arc<Budgeted>>,
    /// `adaptive`.
    adaptive: Option<Arc<Adapted>>,
    /// The keys a response's usage is read under.
    usage_keys: UsageKeys,
}

impl Limiters {
    /// How long a request may wait for a slot.
    pub fn max_wait(&self) -> Duration {
        self.config.max_wait
    }

    /// The adaptive limit, if the room has one.
    pub fn adaptive(&self) -> Option<&Adapted> {
        self.adaptive.as_deref()
    }

    /// How its waiters take turns.
    pub fn fairness(&self) -> &config::Fairness {
        &self.config.fair
    }

    /// The keys a response's usage is read under.
    pub fn usage_keys(&self) -> &UsageKeys {
        &self.usage_keys
    }

    /// The token budget, if the room has one.
    pub fn budget(&self) -> Option<&Budgeted> {
        self.budget.as_deref()
    }

    /// The rate, if the room has one.
    pub fn pace(&self) -> Option<&Rated> {
        self.pace.as_deref()
    }
}

/// A `sessions` room's local side: its settings, page, and the latest
/// numbers from the store (refreshed by the sweeper and admin changes).
pub struct WaitingRoom {
    /// Settings from the file.
    pub config: config::Sessions,
    /// The waiting page.
    pub page: Page,
    /// Arrivals per network and polls per ticket, counted here.
    pub limits: ClientLimits,
    snapshot: RwLock<Snapshot>,
}

impl Limiters {
    /// A requests room's limiters. Kept from `previous` (the same-named room
    /// of the config being replaced) while they still fit: its slots with
    /// the requests holding them, its line of moments while the rate is the
    /// same, its budget, and what its adaptive limit learnt of the upstream.
    fn new(
        name: &str,
        capacity: u32,
        config: config::Requests,
        leases: Option<&Arc<dyn Leases>>,
        previous: Option<&Room>,
    ) -> Limiters {
        let before = previous.and_then(|p| match &p.kind {
            Kind::Requests(l) => Some((&**l, p.capacity)),
            Kind::Sessions(_) => None,
        });
        let slots = match (before.map(|(l, capacity)| (&l.slots, capacity)), leases) {
            (Some((RequestSlots::Local(slots), before)), None) => {
                // The file's capacity wins only if it changed (else an
                // admin change stays), as for sessions rooms in the store.
                if before != capacity {
                    slots.set_capacity(capacity);
                }
                RequestSlots::Local(Arc::clone(slots))
            }
            // A shared room's capacity is the store's, written at `prepare`.
            (Some((RequestSlots::Shared(slots), _)), Some(_)) => {
                RequestSlots::Shared(Arc::clone(slots))
            }
            (_, Some(store)) => {
                RequestSlots::Shared(SharedSlots::new(name, capacity, Arc::clone(store)))
            }
            (_, None) => RequestSlots::Local(Slots::new(capacity)),
        };
        let before = before.map(|(l, _)| l);
        let pace = (config.rate)
            .map(|rate| Rated::keep(rate, name, leases, before.and_then(|l| l.pace.as_ref())));
        let budget = (config.tokens)
            .map(|b| Budgeted::keep(b, name, leases, before.and_then(|l| l.budget.as_ref())));
        let adaptive = adapted(name, capacity, config.adaptive, &slots, before);
        Limiters {
            usage_keys: UsageKeys::new(config.usage_key.as_deref()),
            config,
            slots,
            pace,
            budget,
            adaptive,
        }
    }
}

/// The adaptive limit of a `requests` room, kept across a reload with its
/// ceiling moved to the capacity (what it learnt of the upstream stays);
/// without one, the room's slots count the capacity alone.
fn adapted(
    name: &str,
    capacity: u32,
    config: Option<config::AdaptiveLimit>,
    slots: &RequestSlots,
    before: Option<&Limiters>,
) -> Option<Arc<Adapted>> {
    let Some(a) = config else {
        match slots {
            RequestSlots::Local(s) => s.set_limit(u32::MAX),
            RequestSlots::Shared(s) => s.set_limited(false),
        }
        return None;
    };
    let kept = before
        .and_then(|l| l.adaptive.as_ref())
        .filter(|p| p.min() == a.min)
        // Only over the very slots it caps (kept across the reload too).
        .filter(|p| match (&***p, slots) {
            (Adapted::Local { slots: old, .. }, RequestSlots::Local(new)) => Arc::ptr_eq(old, new),
            (Adapted::Shared { .. }, RequestSlots::Shared(_)) => true,
            _ => false,
        })
        .map(Arc::clone);
    let adapted = kept.unwrap_or_else(|| {
        let limit = Adaptive::new(a.min, capacity);
        Arc::new(match slots {
            RequestSlots::Local(s) => Adapted::Local {
                limit,
                slots: Arc::clone(s),
            },
            RequestSlots::Shared(s) => Adapted::Shared {
                view: Arc::new(limit),
                room: name.to_owned(),
                store: s.store(),
            },
        })
    });
    if let RequestSlots::Shared(s) = slots {
        s.set_limited(true);
    }
    adapted.set_max(capacity);
    Some(adapted)
}

impl WaitingRoom {
    /// A sessions room's local side; its last numbers carry over from
    /// `previous` until the store's arrive.
    fn new(
        name: &str,
        capacity: u32,
        config: config::Sessions,
        page: Option<Page>,
        previous: Option<&Room>,
    ) -> WaitingRoom {
        let snapshot = match previous.map(|p| &p.kind) {
            Some(Kind::Sessions(w)) => w.snapshot(),
            _ => Snapshot {
                settings: RoomSpec::from_config(name, capacity, &config).settings,
                sessions: 0,
                reserved: 0,
                waiting: [0, 0],
                wait: Wait {
                    ms: 0,
                    known: false,
                },
            },
        };
        WaitingRoom {
            page: page.unwrap_or_else(|| Page {
                template: Template::built_in(),
                language: None,
            }),
            limits: ClientLimits::new(config.limits),
            config,
            snapshot: RwLock::new(snapshot),
        }
    }

    /// The latest numbers known to this instance.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.read().clone()
    }

    /// Records fresh numbers from the store.
    pub fn observe(&self, snapshot: Snapshot) {
        *self.snapshot.write() = snapshot;
    }

    /// The admission state as last seen (on the hot path: no store call).
    pub fn state(&self) -> State {
        self.snapshot.read().settings.state
    }

    /// Whether an admitted visitor's request, answered with `status`, is
    /// what this room counts as a conversion.
    pub fn converts(&self, method: &http::Method, path: &str, status: u16) -> bool {
        self.config.conversion.as_ref().is_some_and(|c| {
            *method == c.method && path.starts_with(&c.path_prefix) && (200..300).contains(&status)
        })
    }
}

/// The counter families of every room, registered once.
pub struct RoomMetrics {
    tokens: IntCounterVec,
    retries: IntCounterVec,
    overloaded: IntCounterVec,
    admitted: IntCounterVec,
    queued: IntCounterVec,
    rejected: IntCounterVec,
    slot_wait: HistogramVec,
    store_open: IntCounterVec,
    limited: IntCounterVec,
}

/// One room's counters, looked up once.
pub struct RoomCounters {
    /// Requests let in.
    pub admitted: IntCounter,
    /// Requests that found the room full and waited.
    pub queued: IntCounter,
    /// Turned away: no slot.
    pub rejected_full: IntCounter,
    /// Turned away: the line is at `max_queue`.
    pub rejected_queue_full: IntCounter,
    /// Turned away: the store failed.
    pub rejected_store: IntCounter,
    /// Turned away: the room is in maintenance.
    pub rejected_closed: IntCounter,
    /// Turned away: the room's rate has no moment within `max_wait`.
    pub rejected_rate: IntCounter,
    /// Turned away: the room's token budget has no room within `max_wait`.
    pub rejected_tokens: IntCounter,
    /// Turned away: the upstream asked for a pause longer than `max_wait`.
    pub rejected_upstream: IntCounter,
    /// Upstream `429`s held and sent again (`retry_429`).
    pub retries: IntCounter,
    /// Upstream answers that said it was over its limit (`429`, `503`).
    pub overloaded: IntCounter,
    /// LLM tokens its responses reported (or were estimated at), by client
    /// class: standard, then priority (matched by the room's `priority`).
    pub tokens: [IntCounter; 2],
    /// Let through while the store failed (`on_store_error = "open"`).
    pub store_open: IntCounter,
    /// Time waited for a slot.
    pub slot_wait: Histogram,
    /// Answered `429 RATE_LIMITED`, by limit (in `Limit::ALL` order).
    limited: [IntCounter; 4],
}

impl RoomCounters {
    /// Requests over a per-client limit.
    pub fn limited(&self, limit: Limit) -> &IntCounter {
        &self.limited[limit as usize]
    }
}

impl RoomMetrics {
    /// Registers the room counter families.
    pub fn register(registry: &Registry) -> Result<RoomMetrics, prometheus::Error> {
        Ok(RoomMetrics {
            tokens: metrics::counter(
                registry,
                "room_tokens_total",
                "LLM tokens used by a requests room's responses (their reported usage, else the estimate), by client class.",
                &["room", "class"],
            )?,
            retries: metrics::counter(
                registry,
                "room_upstream_retries_total",
                "Upstream 429s held and sent again within max_wait (retry_429).",
                &["room"],
            )?,
            overloaded: metrics::counter(
                registry,
                "room_upstream_overloaded_total",
                "Upstream answers of a requests room saying the upstream is over its limit (429, 503).",
                &["room"],
            )?,
            admitted: metrics::counter(
                registry,
                "room_admitted_total",
                "Requests let into a room.",
                &["room"],
            )?,
            queued: metrics::counter(
                registry,
                "room_queued_total",
                "Requests that found their room full and waited in line.",
                &["room"],
            )?,
            rejected: metrics::counter(
                registry,
                "room_rejected_total",
                "Requests turned away with 503 QUEUE_REQUIRED, by reason.",
                &["room", "reason"],
            )?,
            slot_wait: metrics::histogram(
                registry,
                "room_slot_wait_seconds",
                "Time requests spent waiting for a slot.",
                &["room"],
                WAIT_BUCKETS,
            )?,
            store_open: metrics::counter(
                registry,
                "store_open_admissions_total",
                "Requests let through unguarded while the store failed (on_store_error = open).",
                &["room"],
            )?,
            limited: metrics::counter(
                registry,
                "room_limited_total",
                "Requests answered 429 RATE_LIMITED, by the per-client limit they were over.",
                &["room", "limit"],
            )?,
        })
    }

    fn room(&self, room: &str) -> RoomCounters {
        RoomCounters {
            admitted: self.admitted.with_label_values(&[room]),
            queued: self.queued.with_label_values(&[room]),
            rejected_full: self.rejected.with_label_values(&[room, "full"]),
            rejected_queue_full: self.rejected.with_label_values(&[room, "queue_full"]),
            rejected_store: self
                .rejected
                .with_label_values(&[room, "store_unavailable"]),
            rejected_closed: self.rejected.with_label_values(&[room, "maintenance"]),
            rejected_rate: self.rejected.with_label_values(&[room, "rate"]),
            rejected_tokens: self.rejected.with_label_values(&[room, "tokens"]),
            rejected_upstream: self.rejected.with_label_values(&[room, "upstream"]),
            retries: self.retries.with_label_values(&[room]),
            overloaded: self.overloaded.with_label_values(&[room]),
            tokens: ["standard", "priority"]
                .map(|class| self.tokens.with_label_values(&[room, class])),
            store_open: self.store_open.with_label_values(&[room]),
            slot_wait: self.slot_wait.with_label_values(&[room]),
            limited: Limit::ALL.map(|l| self.limited.with_label_values(&[room, l.as_str()])),
        }
    }
}

impl Room {
    /// A room with all its slots free; `requests` rooms count in the store
    /// when one is shared. A sessions room shows `page` (the built-in one if none).
    /// `previous` is the same-named room of the config being replaced: its
    /// slots (and the requests holding them) and its last numbers carry over.
    pub fn new(
        config: config::Room,
        page: Option<Page>,
        leases: Option<&Arc<dyn Leases>>,
        metrics: &RoomMetrics,
        previous: Option<&Room>,
    ) -> Room {
        let kind = match config.kind {
            config::RoomKind::Requests(r) => Kind::Requests(Box::new(Limiters::new(
                &config.name,
                config.capacity,
                r,
                leases,
                previous,
            ))),
            config::RoomKind::Sessions(s) => Kind::Sessions(Box::new(WaitingRoom::new(
                &config.name,
                config.capacity,
                *s,
                page,
                previous,
            ))),
        };
        Room {
            counters: metrics.room(&config.name),
            name: config.name,
            capacity: config.capacity,
            bypass: config.bypass,
            on_store_error: config.on_store_error,
            kind,
        }
    }

    /// The room's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What its capacity counts.
    pub fn mode(&self) -> RoomMode {
        match self.kind {
            Kind::Requests(_) => RoomMode::Requests,
            Kind::Sessions(_) => RoomMode::Sessions,
        }
    }

    /// The room's adaptive limit, if it has one.
    pub fn adaptive(&self) -> Option<&Adapted> {
        match &self.kind {
            Kind::Requests(l) => l.adaptive(),
            Kind::Sessions(_) => None,
        }
    }

    /// Who passes without a slot.
    pub fn bypass(&self) -> &Rules {
        &self.bypass
    }

    /// What newcomers get while the store is down.
    pub fn on_store_error(&self) -> OnStoreError {
        self.on_store_error
    }

    /// Requests or sessions.
    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    /// The room's counters.
    pub fn counters(&self) -> &RoomCounters {
        &self.counters
    }

    /// The store's view of a sessions room.
    pub fn spec(&self) -> Option<RoomSpec> {
        match &self.kind {
            Kind::Sessions(w) => Some(RoomSpec::from_config(&self.name, self.capacity, &w.config)),
            Kind::Requests(_) => None,
        }
    }

    /// Capacity, use and line length now (for sessions rooms: as last seen).
    pub fn usage(&self) -> Usage {
        match &self.kind {
            Kind::Requests(l) => l.slots.usage(),
            Kind::Sessions(w) => {
                let s = w.snapshot();
                Usage {
                    capacity: s.settings.capacity,
                    in_use: s.in_use(),
                    waiting: s.queue_length(),
                }
            }
        }
    }
}

/// All rooms, in config order (routes refer to them by index).
pub struct Rooms(Vec<Arc<Room>>);

impl Rooms {
    /// Rooms from validated config and their pages (by index, as `Assets`
    /// loads them); `leases` is the shared store, if any; `previous` the
    /// rooms of the config being replaced (matched by name).
    pub fn new(
        rooms: &[config::Room],
        pages: &[Option<Page>],
        leases: Option<&Arc<dyn Leases>>,
        metrics: &RoomMetrics,
        previous: Option<&Rooms>,
    ) -> Rooms {
        Rooms(
            rooms
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let page = pages.get(i).cloned().flatten();
                    let before = previous.and_then(|p| p.by_name(&r.name));
                    Arc::new(Room::new(r.clone(), page, leases, metrics, before))
                })
                .collect(),
        )
    }

    /// What the store must hold for these rooms: each sessions room's spec,
    /// and each `requests` room's name and capacity (used by a shared store).
    pub fn layout(&self) -> (Vec<RoomSpec>, Vec<(String, u32)>) {
        let sessions = self.iter().filter_map(Room::spec).collect();
        let requests = self
            .iter()
            .filter(|r| matches!(r.kind, Kind::Requests(_)))
            .map(|r| (r.name.clone(), r.capacity))
            .collect();
        (sessions, requests)
    }

    /// The room at a config index.
    pub fn get(&self, index: usize) -> Option<&Room> {
        self.0.get(index).map(|r| &**r)
    }

    /// The room at a config index, for a request to hold while it is in it.
    pub fn shared(&self, index: usize) -> Option<Arc<Room>> {
        self.0.get(index).map(Arc::clone)
    }

    /// The room with this name.
    pub fn by_name(&self, name: &str) -> Option<&Room> {
        self.iter().find(|r| r.name() == name)
    }

    /// Every room.
    pub fn iter(&self) -> impl Iterator<Item = &Room> {
        self.0.iter().map(|r| &**r)
    }

    /// Every sessions room with its waiting room.
    pub fn waiting_rooms(&self) -> impl Iterator<Item = (&Room, &WaitingRoom)> {
        self.iter().filter_map(|r| match &r.kind {
            Kind::Sessions(w) => Some((r, &**w)),
            Kind::Requests(_) => None,
        })
    }

    /// Every room whose request slots are shared through the store.
    pub fn shared_slots(&self) -> impl Iterator<Item = &Arc<SharedSlots>> {
        self.iter().filter_map(|r| match &r.kind {
            Kind::Requests(l) => match &l.slots {
                RequestSlots::Shared(s) => Some(s),
                RequestSlots::Local(_) => None,
            },
            Kind::Sessions(_) => None,
        })
    }

    /// Adds the rooms' gauges (capacity, use, line), read at scrape time so
    /// that keeping them costs the request path nothing. `rooms` gives the
    /// rooms of the config loaded at the time of the scrape.
    pub fn register_gauges(
        rooms: impl Fn() -> Arc<Rooms> + Send + Sync + 'static,
        registry: &Registry,
    ) -> Result<(), prometheus::Error> {
        registry.register(Box::new(RoomGauges::new(Box::new(rooms))?))
    }
}

/// Room gauges read at scrape time.
struct RoomGauges {
    rooms: Box<dyn Fn() -> Arc<Rooms> + Send + Sync>,
    capacity: IntGaugeVec,
    in_use: IntGaugeVec,
    waiting: IntGaugeVec,
    queue_length: IntGaugeVec,
    wait: GaugeVec,
    limit: IntGaugeVec,
}

impl RoomGauges {
    fn new(
        rooms: Box<dyn Fn() -> Arc<Rooms> + Send + Sync>,
    ) -> Result<RoomGauges, prometheus::Error> {
        let gauge =
            |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["room", "mode"]);
        Ok(RoomGauges {
            rooms,
            capacity: gauge("room_capacity", "Configured capacity of the room.")?,
            in_use: gauge("room_in_use", "Slots of the room in use now.")?,
            waiting: gauge("room_waiting", "Requests or visitors waiting in line now.")?,
            queue_length: IntGaugeVec::new(
                Opts::new(
                    "room_queue_length",
                    "Visitors waiting in a sessions room, by lane.",
                ),
                &["room", "lane"],
            )?,
            wait: GaugeVec::new(
                Opts::new(
                    "room_wait_seconds",
                    "Wait a visitor joining a sessions room now is told (as of the last sweep).",
                ),
                &["room"],
            )?,
            limit: IntGaugeVec::new(
                Opts::new(
                    "room_limit",
                    "Requests in flight a requests room lets through now: its adaptive limit (on this instance), else its capacity.",
                ),
                &["room"],
            )?,
        })
    }

    fn gauges(&self) -> [&IntGaugeVec; 4] {
        [
            &self.capacity,
            &self.in_use,
            &self.waiting,
            &self.queue_length,
        ]
    }

    fn collectors(&self) -> [&dyn Collector; 6] {
        [
            &self.capacity,
            &self.in_use,
            &self.waiting,
            &self.queue_length,
            &self.wait,
            &self.limit,
        ]
    }
}

impl Collector for RoomGauges {
    fn desc(&self) -> Vec<&Desc> {
        self.collectors()
            .into_iter()
            .flat_map(|g| g.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // A room removed by a reload leaves no series behind.
        for g in self.gauges() {
            g.reset();
        }
        self.wait.reset();
        self.limit.reset();
        let rooms = (self.rooms)();
        for room in rooms.iter() {
            let usage = room.usage();
            let labels = [room.name(), room.mode().as_str()];
            self.capacity
                .with_label_values(&labels)
                .set(i64::from(usage.capacity));
            self.in_use
                .with_label_values(&labels)
                .set(i64::from(usage.in_use));
            self.waiting
                .with_label_values(&labels)
                .set(i64::from(usage.waiting));
            if room.mode() == RoomMode::Requests {
                let limit = room.adaptive().map_or(usage.capacity, |a| a.limit());
                self.limit
                    .with_label_values(&[room.name()])
                    .set(i64::from(limit));
            }
        }
        for (room, w) in rooms.waiting_rooms() {
            let snapshot = w.snapshot();
            for lane in Lane::ALL {
                self.queue_length
                    .with_label_values(&[room.name(), lane.as_str()])
                    .set(i64::from(snapshot.waiting[lane as usize]));
            }
            self.wait
                .with_label_values(&[room.name()])
                .set(snapshot.wait.ms as f64 / 1000.0);
        }
        self.collectors()
            .into_iter()
            .flat_map(|g| g.collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::Fixture;

    #[test]
    fn conversions_follow_the_rule() {
        let f = Fixture::new(
            "[[room]]\nname = \"web\"\nmode = \"sessions\"\ncapacity = 1\n[room.conversion]\npath_prefix = \"/signup\"",
            "room = \"web\"",
        );
        let (_, w) = f.waiting_room("web");
        assert!(w.converts(&http::Method::POST, "/signup/done", 201));
        assert!(
            !w.converts(&http::Method::GET, "/signup", 200),
            "POST by default"
        );
        assert!(!w.converts(&http::Method::POST, "/signup", 500));
        assert!(!w.converts(&http::Method::POST, "/other", 200));
    }

    #[test]
    fn gauges_and_counters_exist_for_every_room_from_the_start() {
        let f = Fixture::new(
            "[[room]]\nname = \"web\"\nmode = \"sessions\"\ncapacity = 4\n[[room]]\nname = \"llm\"\nmode = \"requests\"\ncapacity = 2",
            "room = \"llm\"",
        );
        let text = String::from_utf8(f.metrics.render()).unwrap();
        for line in [
            r#"anteroom_room_capacity{mode="sessions",room="web"} 4"#,
            r#"anteroom_room_capacity{mode="requests",room="llm"} 2"#,
            r#"anteroom_room_queue_length{lane="priority",room="web"} 0"#,
            r#"anteroom_room_rejected_total{reason="full",room="llm"} 0"#,
            r#"anteroom_room_limit{room="llm"} 2"#,
            r#"anteroom_room_upstream_retries_total{room="llm"} 0"#,
            r#"anteroom_room_admitted_total{room="web"} 0"#,
            r#"anteroom_room_limited_total{limit="polls_per_minute",room="web"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
