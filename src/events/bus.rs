//! Between the request path and the event sinks: one bounded buffer per
//! sink. Publishing never waits and never does I/O: an event goes into each
//! sink's buffer, or, the buffer full, to that sink's spill (its dead-letter
//! file, written by its delivery task) or is dropped and counted, as
//! `[events] on_full` says. A slow or dead sink therefore costs a request
//! nothing, and costs the other sinks nothing either. A buffer is a
//! [`Batch`]: a request's events are copied into it (a few hundred bytes
//! each), and a delivery takes it whole, leaving its own emptied buffer in
//! its place, so events cost no allocation from one batch to the next.

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};
use tokio::sync::Notify;

use crate::config::OnFull;
use crate::events::event::Batch;
use crate::metrics;

const LAG_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0];

/// A sink that could not take a batch.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Where one sink's events go: all of a batch, or an error (the batch is
/// then sent again whole; delivery is at least once, ids tell repeats).
#[async_trait]
pub trait Sink: Send + Sync {
    /// Delivers a batch.
    async fn deliver(&self, batch: &Batch) -> Result<(), SinkError>;
}

/// The sinks' metric families, by `sink`.
#[derive(Clone)]
pub struct BusMetrics {
    delivered: IntCounterVec,
    retried: IntCounterVec,
    failed: IntCounterVec,
    dead_lettered: IntCounterVec,
    dropped: IntCounterVec,
    buffered: IntGaugeVec,
    up: IntGaugeVec,
    lag: HistogramVec,
}

impl BusMetrics {
    /// Registers the families.
    pub fn register(registry: &Registry) -> Result<BusMetrics, prometheus::Error> {
        let c = |name, help| metrics::counter(registry, name, help, &["sink"]);
        let g = |name, help| metrics::gauges(registry, name, help, &["sink"]);
        Ok(BusMetrics {
            delivered: c("events_delivered_total", "Events a sink took.")?,
            retried: c(
                "events_retried_total",
                "Events sent again after a failed delivery.",
            )?,
            failed: c(
                "events_failed_deliveries_total",
                "Deliveries (batches) a sink refused or timed out.",
            )?,
            dead_lettered: c(
                "events_dead_lettered_total",
                "Events written to the sink's dead-letter file (after the last attempt, on a full buffer with on_full = \"spill\", or at shutdown).",
            )?,
            dropped: c(
                "events_dropped_total",
                "Events dropped on a full buffer (on_full = \"drop\").",
            )?,
            buffered: g("events_buffered", "Events waiting in the sink's buffer.")?,
            up: g(
                "event_sink_up",
                "1 when the sink's last delivery succeeded (or none was needed yet).",
            )?,
            lag: metrics::histogram(
                registry,
                "events_delivery_lag_seconds",
                "From an event to its delivery.",
                &["sink"],
                LAG_BUCKETS,
            )?,
        })
    }
}

/// One sink's handles.
#[derive(Clone)]
pub struct SinkMetrics {
    /// Events the sink took.
    pub delivered: IntCounter,
    /// Events sent again.
    pub retried: IntCounter,
    /// Failed deliveries.
    pub failed: IntCounter,
    /// Events written to the dead letters.
    pub dead_lettered: IntCounter,
    dropped: IntCounter,
    buffered: IntGauge,
    /// 1 while the sink delivers.
    pub up: IntGauge,
    /// From event to delivery.
    pub lag: Histogram,
}

impl SinkMetrics {
    fn of(m: &BusMetrics, sink: &str) -> SinkMetrics {
        let up = m.up.with_label_values(&[sink]);
        up.set(1);
        SinkMetrics {
            delivered: m.delivered.with_label_values(&[sink]),
            retried: m.retried.with_label_values(&[sink]),
            failed: m.failed.with_label_values(&[sink]),
            dead_lettered: m.dead_lettered.with_label_values(&[sink]),
            dropped: m.dropped.with_label_values(&[sink]),
            buffered: m.buffered.with_label_values(&[sink]),
            up,
            lag: m.lag.with_label_values(&[sink]),
        }
    }
}

/// One sink's bounded buffer.
pub struct Outbox {
    /// The sink's name.
    pub name: String,
    queue: Mutex<Queue>,
    capacity: usize,
    /// Events per delivery.
    pub batch: usize,
    /// A buffer this full wakes its delivery task: a batch, or half the
    /// buffer if that is less.
    full: usize,
    on_full: OnFull,
    ready: Notify,
    /// The sink's metrics.
    pub metrics: SinkMetrics,
}

/// What waits for a sink's delivery task.
#[derive(Default)]
struct Queue {
    /// Events to deliver, at most `capacity`.
    pending: Batch,
    /// Events past the buffer's room, for the dead-letter file at once
    /// (`on_full = "spill"`).
    spilled: Batch,
}

impl Outbox {
    /// Buffers `events` (those of one request, under one lock).
    fn push(&self, events: &Batch) {
        let mut queue = self.queue.lock();
        let before = queue.pending.len();
        let kept = self.capacity.saturating_sub(before).min(events.len());
        queue.pending.extend_first(events, kept);
        let len = queue.pending.len();
        let over = events.len() - kept;
        if over > 0 && self.on_full == OnFull::Spill {
            queue.spilled.extend_from(events, kept);
        }
        drop(queue);
        if kept > 0 {
            self.metrics.buffered.set(len as i64);
        }
        if over > 0 && self.on_full == OnFull::Drop {
            self.metrics.dropped.inc_by(over as u64);
        }
        // The delivery task comes by itself every `flush_interval`; it is
        // woken early only when a batch fills (events spill only from a
        // full buffer). Waking it for the first event of each batch too (a
        // syscall into its thread) cost an arrival more than its events.
        if before < self.full && len >= self.full {
            self.ready.notify_one();
        }
    }

    /// Waits until a full batch is buffered (the delivery task's early
    /// wake; it otherwise comes every `flush_interval`).
    pub async fn full_batch(&self) {
        loop {
            let ready = self.ready.notified();
            if self.buffered() >= self.full {
                return;
            }
            ready.await;
        }
    }

    /// How many events make the delivery task come early.
    pub fn full(&self) -> usize {
        self.full
    }

    /// Events buffered.
    pub fn buffered(&self) -> usize {
        self.queue.lock().pending.len()
    }

    /// Moves up to `max` events into `into` (empty: it then takes the
    /// buffer's memory, and leaves its own), without waiting.
    pub fn take(&self, max: usize, into: &mut Batch) {
        let mut queue = self.queue.lock();
        queue.pending.move_front(max, into);
        self.metrics.buffered.set(queue.pending.len() as i64);
    }

    /// Moves the events that spilled into `into`.
    pub fn take_spilled(&self, into: &mut Batch) {
        let mut queue = self.queue.lock();
        let n = queue.spilled.len();
        queue.spilled.move_front(n, into);
    }
}

/// Every sink's buffer.
#[derive(Default)]
pub struct Bus {
    outboxes: Vec<Arc<Outbox>>,
}

impl Bus {
    /// A bus with a buffer of `capacity` for each named sink, delivered in
    /// batches of `batch`; returns each sink's buffer, for its delivery
    /// task, in the same order.
    pub fn new(
        sinks: &[String],
        capacity: usize,
        batch: usize,
        on_full: OnFull,
        metrics: &BusMetrics,
    ) -> (Bus, Vec<Arc<Outbox>>) {
        let outboxes: Vec<_> = sinks
            .iter()
            .map(|name| {
                Arc::new(Outbox {
                    name: name.clone(),
                    queue: Mutex::new(Queue::default()),
                    capacity,
                    batch: batch.max(1),
                    full: batch.min(capacity / 2).max(1),
                    on_full,
                    ready: Notify::new(),
                    metrics: SinkMetrics::of(metrics, name),
                })
            })
            .collect();
        (
            Bus {
                outboxes: outboxes.clone(),
            },
            outboxes,
        )
    }

    /// Whether any sink is configured (events are built only then).
    pub fn is_active(&self) -> bool {
        !self.outboxes.is_empty()
    }

    /// Hands events to every sink's buffer, in order. Never waits.
    pub fn publish(&self, events: &Batch) {
        for outbox in &self.outboxes {
            outbox.push(events);
        }
    }

    /// Whether every sink's last delivery succeeded.
    pub fn healthy(&self) -> Vec<(String, bool)> {
        self.outboxes
            .iter()
            .map(|o| (o.name.clone(), o.metrics.up.get() == 1))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::event::{Fields, Kind};

    fn two_sinks(capacity: usize, on_full: OnFull) -> (Bus, Vec<Arc<Outbox>>) {
        let registry = Registry::new();
        let metrics = BusMetrics::register(&registry).unwrap();
        Bus::new(&["a".into(), "b".into()], capacity, 3, on_full, &metrics)
    }

    /// A request's events, of these kinds.
    fn events(kinds: &[Kind], room: &str) -> Batch {
        let mut batch = Batch::default();
        for &kind in kinds {
            batch.push(kind, room, "i", &Fields::default());
        }
        batch
    }

    fn taken(outbox: &Outbox, max: usize) -> Batch {
        let mut batch = Batch::default();
        outbox.take(max, &mut batch);
        batch
    }

    fn rooms(batch: &Batch) -> Vec<String> {
        batch.iter().map(|e| e.room().to_owned()).collect()
    }

    #[tokio::test]
    async fn every_sink_gets_every_event_in_order() {
        let (bus, outboxes) = two_sinks(10, OnFull::Drop);
        for room in ["1", "2", "3"] {
            bus.publish(&events(&[Kind::Arrived], room));
        }
        for outbox in &outboxes {
            assert_eq!(rooms(&taken(outbox, 10)), ["1", "2", "3"]);
        }
    }

    #[tokio::test]
    async fn a_full_buffer_spills_or_drops_and_never_waits() {
        let (bus, outboxes) = two_sinks(2, OnFull::Spill);
        for _ in 0..5 {
            bus.publish(&events(&[Kind::Arrived], "web"));
        }
        let outbox = &outboxes[0];
        assert_eq!(taken(outbox, 10).len(), 2);
        let mut spilled = Batch::default();
        outbox.take_spilled(&mut spilled);
        assert_eq!(spilled.len(), 3);
        let (bus, outboxes) = two_sinks(2, OnFull::Drop);
        for _ in 0..5 {
            bus.publish(&events(&[Kind::Arrived], "web"));
        }
        assert_eq!(outboxes[1].metrics.dropped.get(), 3);
        assert_eq!(taken(&outboxes[1], 10).len(), 2);
        let mut spilled = Batch::default();
        outboxes[1].take_spilled(&mut spilled);
        assert!(spilled.is_empty(), "dropped, not spilled");
    }

    #[tokio::test]
    async fn a_requests_events_past_the_buffers_room_spill_in_order() {
        let (bus, outboxes) = two_sinks(3, OnFull::Spill);
        bus.publish(&events(&[Kind::Arrived, Kind::Queued], "web"));
        bus.publish(&events(&[Kind::Arrived, Kind::Queued], "web"));
        let outbox = &outboxes[0];
        let kinds: Vec<_> = taken(outbox, 10).iter().map(|e| e.kind()).collect();
        assert_eq!(kinds, [Kind::Arrived, Kind::Queued, Kind::Arrived]);
        let mut spilled = Batch::default();
        outbox.take_spilled(&mut spilled);
        let kinds: Vec<_> = spilled.iter().map(|e| e.kind()).collect();
        assert_eq!(kinds, [Kind::Queued]);
    }

    #[tokio::test]
    async fn a_delivery_takes_a_batch_at_most_and_leaves_the_rest_in_order() {
        let (bus, outboxes) = two_sinks(10, OnFull::Drop);
        for room in ["1", "2", "3", "4"] {
            bus.publish(&events(&[Kind::Arrived], room));
        }
        assert_eq!(rooms(&taken(&outboxes[0], 3)), ["1", "2", "3"]);
        assert_eq!(outboxes[0].buffered(), 1);
        assert_eq!(rooms(&taken(&outboxes[0], 3)), ["4"]);
        assert_eq!(outboxes[0].buffered(), 0);
    }

    #[tokio::test]
    async fn a_full_batch_wakes_its_delivery_task_and_no_less() {
        let (bus, outboxes) = two_sinks(100, OnFull::Drop);
        let outbox = Arc::clone(&outboxes[0]);
        let mut woken = tokio::spawn(async move { outbox.full_batch().await });
        for _ in 0..2 {
            bus.publish(&events(&[Kind::Arrived], "web"));
        }
        tokio::task::yield_now().await;
        assert!(
            futures_util::FutureExt::now_or_never(&mut woken).is_none(),
            "two events of a batch of three wake nobody"
        );
        bus.publish(&events(&[Kind::Queued], "web"));
        woken.await.unwrap();
        assert_eq!(taken(&outboxes[0], 100).len(), 3);
    }
}
