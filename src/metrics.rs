//! Prometheus metrics, all registered here, on anteroom's own registry.
//!
//! Counters and histograms are recorded once per request in the `logging`
//! phase. Room gauges (capacity, slots in use, waiting) are read from the
//! rooms at scrape time, so keeping them costs the request path nothing.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::room::Rooms;

const WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
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
}

impl Metrics {
    /// Creates and registers all metrics, including the live room gauges.
    pub fn register(rooms: Arc<Rooms>) -> Result<Metrics, prometheus::Error> {
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
            registry,
        };
        metrics
            .registry
            .register(Box::new(RoomGauges::new(rooms)?))?;
        let build = IntGaugeVec::new(
            Opts::new("build_info", "Version of the running anteroom."),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        metrics.registry.register(Box::new(build))?;
        Ok(metrics)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// Room gauges read at scrape time.
struct RoomGauges {
    rooms: Arc<Rooms>,
    capacity: IntGaugeVec,
    in_use: IntGaugeVec,
    waiting: IntGaugeVec,
}

impl RoomGauges {
    fn new(rooms: Arc<Rooms>) -> Result<RoomGauges, prometheus::Error> {
        let gauge =
            |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["room", "mode"]);
        Ok(RoomGauges {
            rooms,
            capacity: gauge("room_capacity", "Configured capacity of the room.")?,
            in_use: gauge("room_in_use", "Slots of the room in use now.")?,
            waiting: gauge("room_waiting", "Requests waiting in line for a slot now.")?,
        })
    }
}

impl Collector for RoomGauges {
    fn desc(&self) -> Vec<&Desc> {
        [&self.capacity, &self.in_use, &self.waiting]
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
        [&self.capacity, &self.in_use, &self.waiting]
            .into_iter()
            .flat_map(|g| g.collect())
            .collect()
    }
}
