//! Between the request path and the event sinks: one bounded buffer per
//! sink. Publishing never waits and never does I/O: an event goes into each
//! sink's buffer, or, the buffer full, to that sink's spill (its dead-letter
//! file, written by its delivery task) or is dropped and counted, as
//! `[events] on_full` says. A slow or dead sink therefore costs a request
//! nothing, and costs the other sinks nothing either.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};
use tokio::sync::{Notify, mpsc};

use crate::config::OnFull;
use crate::event::Event;
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
    async fn deliver(&self, batch: &[Event]) -> Result<(), SinkError>;
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
    queue: Mutex<VecDeque<Event>>,
    capacity: usize,
    /// Events per delivery.
    pub batch: usize,
    /// A buffer this full wakes its delivery task: a batch, or half the
    /// buffer if that is less.
    full: usize,
    on_full: OnFull,
    ready: Notify,
    spill: mpsc::UnboundedSender<Event>,
    /// The sink's metrics.
    pub metrics: SinkMetrics,
}

/// What a sink's delivery task takes over: its buffer and its spill.
pub struct Outlet {
    /// The buffer.
    pub outbox: Arc<Outbox>,
    /// Events for the dead-letter file straight away (a full buffer).
    pub spilled: mpsc::UnboundedReceiver<Event>,
}

impl Outbox {
    /// Buffers `events` (those of one request, under one lock).
    fn push(&self, events: &[Event]) {
        let mut queue = self.queue.lock();
        let before = queue.len();
        let (kept, over) = events.split_at(self.capacity.saturating_sub(before).min(events.len()));
        queue.extend(kept.iter().cloned());
        let len = queue.len();
        drop(queue);
        if !kept.is_empty() {
            self.metrics.buffered.set(len as i64);
        }
        // The delivery task comes by itself every `flush_interval`; it is
        // woken early only when a batch fills. Waking it for the first
        // event of each batch too (a syscall into its thread) cost an
        // arrival more than its events.
        if before < self.full && len >= self.full {
            self.ready.notify_one();
        }
        for event in over {
            match self.on_full {
                OnFull::Drop => self.metrics.dropped.inc(),
                // Only fails once the delivery task is gone (shutdown): counted.
                OnFull::Spill => {
                    if self.spill.send(event.clone()).is_err() {
                        self.metrics.dropped.inc();
                    }
                }
            }
        }
    }

    /// Waits until a full batch is buffered (the delivery task's early
    /// wake; it otherwise comes every `flush_interval`).
    pub async fn full_batch(&self) {
        loop {
            let ready = self.ready.notified();
            if self.queue.lock().len() >= self.full {
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
        self.queue.lock().len()
    }

    /// Up to `max` events at once, without waiting.
    pub fn take(&self, max: usize) -> Vec<Event> {
        let mut queue = self.queue.lock();
        let n = queue.len().min(max);
        let batch: Vec<_> = queue.drain(..n).collect();
        self.metrics.buffered.set(queue.len() as i64);
        batch
    }
}

/// Every sink's buffer.
#[derive(Default)]
pub struct Bus {
    outboxes: Vec<Arc<Outbox>>,
}

impl Bus {
    /// A bus with a buffer of `capacity` for each named sink, delivered in
    /// batches of `batch`; returns what each sink's delivery task takes
    /// over, in the same order.
    pub fn new(
        sinks: &[String],
        capacity: usize,
        batch: usize,
        on_full: OnFull,
        metrics: &BusMetrics,
    ) -> (Bus, Vec<Outlet>) {
        let mut outlets = Vec::new();
        let outboxes = sinks
            .iter()
            .map(|name| {
                let (spill, spilled) = mpsc::unbounded_channel();
                let outbox = Arc::new(Outbox {
                    name: name.clone(),
                    queue: Mutex::new(VecDeque::new()),
                    capacity,
                    batch: batch.max(1),
                    full: batch.min(capacity / 2).max(1),
                    on_full,
                    ready: Notify::new(),
                    spill,
                    metrics: SinkMetrics::of(metrics, name),
                });
                outlets.push(Outlet {
                    outbox: Arc::clone(&outbox),
                    spilled,
                });
                outbox
            })
            .collect();
        (Bus { outboxes }, outlets)
    }

    /// Whether any sink is configured (events are built only then).
    pub fn is_active(&self) -> bool {
        !self.outboxes.is_empty()
    }

    /// Hands events to every sink's buffer, in order. Never waits.
    pub fn publish(&self, events: &[Event]) {
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
    use crate::event::{Fields, Kind};

    fn two_sinks(capacity: usize, on_full: OnFull) -> (Bus, Vec<Outlet>) {
        let registry = Registry::new();
        let metrics = BusMetrics::register(&registry).unwrap();
        Bus::new(&["a".into(), "b".into()], capacity, 3, on_full, &metrics)
    }

    #[tokio::test]
    async fn every_sink_gets_every_event_in_order() {
        let (bus, outlets) = two_sinks(10, OnFull::Drop);
        for room in ["1", "2", "3"] {
            bus.publish(&[Event::new(Kind::Arrived, room, "i", &Fields::default())]);
        }
        for outlet in &outlets {
            let batch = outlet.outbox.take(10);
            let rooms: Vec<_> = batch.iter().map(|e| e.room()).collect();
            assert_eq!(rooms, ["1", "2", "3"]);
        }
    }

    #[tokio::test]
    async fn a_full_buffer_spills_or_drops_and_never_waits() {
        let (bus, mut outlets) = two_sinks(2, OnFull::Spill);
        for _ in 0..5 {
            bus.publish(&[Event::new(Kind::Arrived, "web", "i", &Fields::default())]);
        }
        let outlet = &mut outlets[0];
        assert_eq!(outlet.outbox.take(10).len(), 2);
        let mut spilled = 0;
        while outlet.spilled.try_recv().is_ok() {
            spilled += 1;
        }
        assert_eq!(spilled, 3);
        let (bus, outlets) = two_sinks(2, OnFull::Drop);
        for _ in 0..5 {
            bus.publish(&[Event::new(Kind::Arrived, "web", "i", &Fields::default())]);
        }
        assert_eq!(outlets[1].outbox.metrics.dropped.get(), 3);
        assert_eq!(outlets[1].outbox.take(10).len(), 2);
    }

    #[tokio::test]
    async fn a_requests_events_past_the_buffers_room_spill_in_order() {
        let (bus, mut outlets) = two_sinks(3, OnFull::Spill);
        let event = |kind| Event::new(kind, "web", "i", &Fields::default());
        bus.publish(&[event(Kind::Arrived), event(Kind::Queued)]);
        bus.publish(&[event(Kind::Arrived), event(Kind::Queued)]);
        let outlet = &mut outlets[0];
        let kinds: Vec<_> = outlet.outbox.take(10).iter().map(Event::kind).collect();
        assert_eq!(kinds, [Kind::Arrived, Kind::Queued, Kind::Arrived]);
        assert_eq!(outlet.spilled.try_recv().unwrap().kind(), Kind::Queued);
        assert!(outlet.spilled.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_full_batch_wakes_its_delivery_task_and_no_less() {
        let (bus, outlets) = two_sinks(100, OnFull::Drop);
        let outbox = Arc::clone(&outlets[0].outbox);
        let mut woken = tokio::spawn(async move { outbox.full_batch().await });
        for _ in 0..2 {
            bus.publish(&[Event::new(Kind::Arrived, "web", "i", &Fields::default())]);
        }
        tokio::task::yield_now().await;
        assert!(
            futures_util::FutureExt::now_or_never(&mut woken).is_none(),
            "two events of a batch of three wake nobody"
        );
        bus.publish(&[Event::new(Kind::Queued, "web", "i", &Fields::default())]);
        woken.await.unwrap();
        assert_eq!(outlets[0].outbox.take(100).len(), 3);
    }
}
