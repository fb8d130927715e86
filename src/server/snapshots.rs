//! Keeps the memory store's state on local disk (`[store] state_dir`), off
//! the request path: written every `snapshot_interval` by a background task,
//! once more when the process stops after its last request, and once when it
//! hands its sockets to a new process (after which it writes no more: the new
//! process owns the file). A crash loses at most one interval of changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::{Histogram, IntCounterVec, IntGauge, Registry};

use crate::config::StateDir;
use crate::limits::slots::RequestSlots;
use crate::metrics;
use crate::proxy::site::Current;
use crate::room::Kind;
use crate::store::memory::{MemoryStore, SavedSlots};
use crate::store::state_file::{StateError, StateFile};
use crate::store::{Observed, RoomSpec, now_millis};

const WRITE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

struct SnapshotMetrics {
    writes: IntCounterVec,
    seconds: Histogram,
    bytes: IntGauge,
}

/// Writes the memory store's state to its file.
pub struct Snapshots {
    store: Arc<Observed<MemoryStore>>,
    file: StateFile,
    current: Arc<Current>,
    interval: Duration,
    handed_over: AtomicBool,
    metrics: SnapshotMetrics,
    /// One write at a time.
    writing: tokio::sync::Mutex<()>,
}

impl Snapshots {
    /// Snapshots of `store` into `file` every `interval`.
    pub fn new(
        store: Arc<Observed<MemoryStore>>,
        file: StateFile,
        current: Arc<Current>,
        interval: Duration,
        registry: &Registry,
    ) -> Result<Snapshots, prometheus::Error> {
        let writes = metrics::counter(
            registry,
            "state_snapshots_total",
            "Writes of the memory store's state to state_dir, by result.",
            &["result"],
        )?;
        for result in ["ok", "failed"] {
            writes.with_label_values(&[result]);
        }
        let seconds = metrics::histogram(
            registry,
            "state_snapshot_seconds",
            "Time to write the memory store's state (rooms locked one at a time).",
            &[],
            WRITE_BUCKETS,
        )?
        .with_label_values::<&str>(&[]);
        Ok(Snapshots {
            store,
            file,
            current,
            interval,
            handed_over: AtomicBool::new(false),
            metrics: SnapshotMetrics {
                writes,
                seconds,
                bytes: metrics::gauge(
                    registry,
                    "state_snapshot_bytes",
                    "Size of the last state written.",
                )?,
            },
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// The capacities of the `requests` rooms counted here.
    fn slots(&self) -> Vec<SavedSlots> {
        let site = self.current.load();
        site.rooms
            .iter()
            .filter_map(|room| match room.kind() {
                Kind::Requests(limits) => {
                    let RequestSlots::Local(slots) = &limits.slots else {
                        return None;
                    };
                    let configured = site.config.rooms.iter().find(|r| r.name == room.name())?;
                    Some(SavedSlots {
                        room: room.name().to_owned(),
                        configured: configured.capacity,
                        capacity: slots.usage().capacity,
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// Writes the state now (unless it was handed to a new process);
    /// whether it was written.
    pub async fn save(self: &Arc<Self>, why: &'static str) -> bool {
        let _one = self.writing.lock().await;
        if self.handed_over.load(Ordering::Acquire) {
            return false;
        }
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.write(why))
            .await
            .unwrap_or(false)
    }

    /// Writes the state a last time and stops: a new process takes over.
    pub async fn hand_over(self: &Arc<Self>) {
        self.save("upgrade").await;
        self.handed_over.store(true, Ordering::Release);
    }

    /// Writes the state from outside the runtime (after it stopped).
    pub fn save_blocking(&self, why: &'static str) -> bool {
        !self.handed_over.load(Ordering::Acquire) && self.write(why)
    }

    fn write(&self, why: &'static str) -> bool {
        let start = Instant::now();
        let result = self
            .store
            .inner()
            .export(&self.slots())
            .map_err(|e| format!("cannot encode the state: {e}"))
            .and_then(|body| {
                self.file
                    .write(&body)
                    .map(|()| body.len())
                    .map_err(|e| e.to_string())
            });
        self.metrics.seconds.observe(start.elapsed().as_secs_f64());
        match result {
            Ok(bytes) => {
                self.metrics.writes.with_label_values(&["ok"]).inc();
                self.metrics
                    .bytes
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
                if why != "interval" {
                    let (queued, sessions) = self.store.inner().counts();
                    tracing::info!(why, bytes, queued, sessions, file = %self.file.path().display(), "state written");
                }
                true
            }
            Err(error) => {
                self.metrics.writes.with_label_values(&["failed"]).inc();
                tracing::error!(why, %error, "cannot write the state; the previous one stays");
                false
            }
        }
    }
}

/// The periodic writer.
pub struct Writer(pub Arc<Snapshots>);

#[async_trait]
impl BackgroundService for Writer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.0.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => { self.0.save("interval").await; }
                // The last write is the drain's, after the last request.
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The memory store of a config with `state_dir`: as saved there, or empty
/// on a first start. A file that cannot be used is reported (naming the file
/// and what is wrong), set aside for inspection, and the store starts empty:
/// it never stops the process. Only a directory that cannot be written does.
pub fn restore(
    state: &StateDir,
    specs: &[RoomSpec],
) -> Result<(StateFile, MemoryStore, Vec<SavedSlots>), StateError> {
    let file = StateFile::open(&state.dir)?;
    let path = file.path();
    let failed = |problem: String| {
        let aside = file.set_aside(now_millis() / 1000);
        tracing::error!(
            file = %path.display(),
            %problem,
            set_aside = aside.as_ref().map(|p| p.display().to_string()),
            "state file cannot be used; starting with an empty line"
        );
    };
    match file.read() {
        Ok(None) => {
            tracing::info!(file = %path.display(), "no saved state yet; starting with an empty line");
        }
        Ok(Some(body)) => match MemoryStore::restore(specs, &body) {
            Ok((store, slots)) => {
                let (queued, sessions) = store.counts();
                tracing::info!(file = %path.display(), queued, sessions, "state restored");
                return Ok((file, store, slots));
            }
            Err(reason) => failed(format!("unreadable state: {reason}")),
        },
        Err(e) => failed(e.to_string()),
    }
    Ok((file, MemoryStore::new(specs), Vec::new()))
}

/// Puts saved `requests` room capacities (admin changes) back in force,
/// where the file's capacity is still the one they were saved with.
pub fn apply(slots: &[SavedSlots], current: &Current) {
    let site = current.load();
    for saved in slots {
        let Some(room) = site.rooms.by_name(&saved.room) else {
            continue;
        };
        let configured = site.config.rooms.iter().find(|r| r.name == saved.room);
        let Kind::Requests(limits) = room.kind() else {
            continue;
        };
        if let (RequestSlots::Local(s), Some(c)) = (&limits.slots, configured) {
            if c.capacity == saved.configured {
                s.set_capacity(saved.capacity);
            }
        }
    }
}
