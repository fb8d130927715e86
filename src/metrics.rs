//! Prometheus metrics, all registered here, on anteroom's own registry.
//!
//! Counters and histograms are recorded once per request in the `logging`
//! phase. Room gauges (capacity, slots in use, waiting) are read from the
//! rooms at scrape time, so keeping them costs the request path nothing.

use std::sync::{Arc, OnceLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::queue::Lane;
use crate::room::Rooms;

const WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const STORE_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
const QUEUE_WAIT_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Every metric anteroom exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests let into a room.
    pub admitted: IntCounterVec,
    /// Requests that found their room full and waited in line.
    pub queued: IntCounterVec,
    /// Requests turned away, by reason.
    pub rejected: IntCounterVec,
    /// Time spent waiting for a slot, including zero for those let in at once.
    pub slot_wait: HistogramVec,
    /// Every response, by route and status, including anteroom's own.
    pub requests: IntCounterVec,
    /// Responses received from upstreams.
    pub upstream_responses: IntCounterVec,
    /// Time from sending the request upstream to its response header.
    pub upstream_latency: HistogramVec,
    /// Whole request, from the first byte read to the last byte written.
    pub request_duration: HistogramVec,
    /// New visitors at a sessions room, by lane.
    pub arrivals: IntCounterVec,
    /// Visitors admitted to a sessions room, at once (`direct`) or from the line (`queue`).
    pub admissions: IntCounterVec,
    /// Sessions ended by the visitor (`leave`) or the app (`command`).
    pub released: IntCounterVec,
    /// Sessions, tickets and reservations that lapsed.
    pub expirations: IntCounterVec,
    /// Time from joining the line to admission.
    pub queue_wait: HistogramVec,
    /// Conversions by campaign (bounded labels, see `[attribution]`).
    pub conversions: IntCounterVec,
    /// Store operations that failed or timed out.
    pub store_errors: IntCounterVec,
    /// Time per store operation (a round trip for a shared store).
    pub store_latency: HistogramVec,
    /// 1 when the last store operation succeeded.
    pub store_up: IntGauge,
    /// Requests let through unguarded because the store failed (`on_store_error = "open"`).
    pub store_open: IntCounterVec,
}

impl Metrics {
    /// Creates and registers all metrics; room gauges come with `watch_rooms`.
    pub fn register() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("anteroom".to_owned()), None)?;
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, prometheus::Error>(h)
        };
        let metrics = Metrics {
            admitted: counter(
                "room_admitted_total",
                "Requests let into a room.",
                &["room"],
            )?,
            queued: counter(
                "room_queued_total",
                "Requests that found their room full and waited in line.",
                &["room"],
            )?,
            rejected: counter(
                "room_rejected_total",
                "Requests turned away with 503 QUEUE_REQUIRED, by reason.",
                &["room", "reason"],
            )?,
            slot_wait: histogram(
                "room_slot_wait_seconds",
                "Time requests spent waiting for a slot.",
                &["room"],
                WAIT_BUCKETS,
            )?,
            requests: counter(
                "requests_total",
                "Responses sent, by route and status, including anteroom's own.",
                &["route", "status"],
            )?,
            upstream_responses: counter(
                "upstream_responses_total",
                "Responses received from upstreams, by route, upstream and status.",
                &["route", "upstream", "status"],
            )?,
            upstream_latency: histogram(
                "upstream_response_seconds",
                "Time from sending a request upstream to receiving its response header.",
                &["route", "upstream"],
                LATENCY_BUCKETS,
            )?,
            request_duration: histogram(
                "request_duration_seconds",
                "Whole request time as seen by anteroom, by route.",
                &["route"],
                LATENCY_BUCKETS,
            )?,
            arrivals: counter(
                "visitors_arrived_total",
                "New visitors at a sessions room, by lane.",
                &["room", "lane"],
            )?,
            admissions: counter(
                "visitors_admitted_total",
                "Visitors admitted to a sessions room, at once (direct) or from the line (queue).",
                &["room", "how"],
            )?,
            released: counter(
                "visitors_released_total",
                "Sessions ended by the visitor (leave) or the app (command).",
                &["room", "how"],
            )?,
            expirations: counter(
                "visitors_expired_total",
                "Sessions, tickets and reservations that lapsed.",
                &["room", "kind"],
            )?,
            queue_wait: histogram(
                "visitors_queue_wait_seconds",
                "Time from joining the line to admission.",
                &["room"],
                QUEUE_WAIT_BUCKETS,
            )?,
            conversions: counter(
                "visitors_converted_total",
                "Conversions, by campaign (values outside [attribution] count as other).",
                &["room", "utm_source", "utm_campaign"],
            )?,
            store_errors: counter(
                "store_errors_total",
                "Store operations that failed or timed out, by operation.",
                &["op"],
            )?,
            store_latency: histogram(
                "store_operation_seconds",
                "Time per store operation, by operation.",
                &["op"],
                STORE_BUCKETS,
            )?,
            store_up: {
                let g = IntGauge::new("store_up", "1 when the last store operation succeeded.")?;
                g.set(1);
                registry.register(Box::new(g.clone()))?;
                g
            },
            store_open: counter(
                "store_open_admissions_total",
                "Requests let through unguarded while the store failed (on_store_error = open).",
                &["room"],
            )?,
            registry,
        };
        let build = IntGaugeVec::new(
            Opts::new("build_info", "Version of the running anteroom."),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        metrics.registry.register(Box::new(build))?;
        Ok(metrics)
    }

    /// The handles of one route (`-` for requests no route matched).
    pub fn route(&self, route: &str, upstream: &str) -> RouteMetrics {
        let cells = || (0..STATUSES).map(|_| OnceLock::new()).collect::<Box<[_]>>();
        RouteMetrics {
            route: route.to_owned(),
            upstream: upstream.to_owned(),
            requests: self.requests.clone(),
            upstream_responses: self.upstream_responses.clone(),
            requests_by_status: cells(),
            upstream_by_status: cells(),
            duration: self.request_duration.with_label_values(&[route]),
            latency: self.upstream_latency.with_label_values(&[route, upstream]),
        }
    }

    /// The handles of one room.
    pub fn room(&self, room: &str) -> RoomMetrics {
        RoomMetrics {
            admitted: self.admitted.with_label_values(&[room]),
            queued: self.queued.with_label_values(&[room]),
            rejected_full: self.rejected.with_label_values(&[room, "full"]),
            rejected_store: self
                .rejected
                .with_label_values(&[room, "store_unavailable"]),
            store_open: self.store_open.with_label_values(&[room]),
            slot_wait: self.slot_wait.with_label_values(&[room]),
        }
    }

    /// Adds the gauges of these rooms (capacity, use, line), read at scrape time.
    pub fn watch_rooms(&self, rooms: Arc<Rooms>) -> Result<(), prometheus::Error> {
        self.registry.register(Box::new(RoomGauges::new(rooms)?))
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// One route's metrics, looked up once: recording a request is then an
/// index and an atomic add rather than hashing label values.
pub struct RouteMetrics {
    route: String,
    upstream: String,
    requests: IntCounterVec,
    upstream_responses: IntCounterVec,
    requests_by_status: Box<[OnceLock<IntCounter>]>,
    upstream_by_status: Box<[OnceLock<IntCounter>]>,
    /// Whole request time.
    pub duration: Histogram,
    /// Time to the upstream's response header.
    pub latency: Histogram,
}

/// HTTP status codes have three digits.
const STATUSES: usize = 1000;

fn by_status(
    cells: &[OnceLock<IntCounter>],
    status: u16,
    make: impl FnOnce(&str) -> IntCounter,
) -> &IntCounter {
    let i = usize::from(status).min(STATUSES - 1);
    cells[i].get_or_init(|| make(&i.to_string()))
}

impl RouteMetrics {
    /// The counter of responses with this status.
    pub fn request(&self, status: u16) -> &IntCounter {
        by_status(&self.requests_by_status, status, |s| {
            self.requests.with_label_values(&[&self.route, s])
        })
    }

    /// The counter of upstream responses with this status.
    pub fn upstream_response(&self, status: u16) -> &IntCounter {
        by_status(&self.upstream_by_status, status, |s| {
            self.upstream_responses
                .with_label_values(&[&self.route, &self.upstream, s])
        })
    }
}

/// One room's request metrics, looked up once.
pub struct RoomMetrics {
    /// Requests let in.
    pub admitted: IntCounter,
    /// Requests that waited.
    pub queued: IntCounter,
    /// Turned away: no slot.
    pub rejected_full: IntCounter,
    /// Turned away: the store failed.
    pub rejected_store: IntCounter,
    /// Let through while the store failed.
    pub store_open: IntCounter,
    /// Time waited for a slot.
    pub slot_wait: Histogram,
}

/// Room gauges read at scrape time.
struct RoomGauges {
    rooms: Arc<Rooms>,
    capacity: IntGaugeVec,
    in_use: IntGaugeVec,
    waiting: IntGaugeVec,
    queue_length: IntGaugeVec,
}

impl RoomGauges {
    fn new(rooms: Arc<Rooms>) -> Result<RoomGauges, prometheus::Error> {
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
        })
    }
}

impl Collector for RoomGauges {
    fn desc(&self) -> Vec<&Desc> {
        [
            &self.capacity,
            &self.in_use,
            &self.waiting,
            &self.queue_length,
        ]
        .into_iter()
        .flat_map(|g| g.desc())
        .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for room in self.rooms.iter() {
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
        }
        for (room, w) in self.rooms.waiting_rooms() {
            let waiting = w.snapshot().waiting;
            for lane in Lane::ALL {
                self.queue_length
                    .with_label_values(&[room.name(), lane.as_str()])
                    .set(i64::from(waiting[lane as usize]));
            }
        }
        [
            &self.capacity,
            &self.in_use,
            &self.waiting,
            &self.queue_length,
        ]
        .into_iter()
        .flat_map(|g| g.collect())
        .collect()
    }
}
