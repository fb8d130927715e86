//! The store keeper: the background work of the rooms, off the request path.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::site::Current;
use crate::store::Store;

/// Off the request path: sets the store's rooms up, expires lapsed sessions
/// and silent tickets, offers freed slots to the line and refreshes each
/// waiting room's numbers (every `sweep_interval`); renews this instance's
/// request-slot leases (every third of a lease). It works on the rooms of
/// the config in force, and sets them up again after a reload.
pub struct Keeper {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) current: Arc<Current>,
    pub(crate) sweep_interval: Duration,
    /// How long a request-slot lease lasts in a shared store.
    pub(crate) lease: Option<Duration>,
}

impl Keeper {
    async fn renew(&self) {
        let site = self.current.load();
        for slots in site.rooms.shared_slots() {
            if let Err(e) = slots.renew().await {
                tracing::warn!(error = %e, "could not renew request-slot leases");
            }
            let _ = slots.refresh().await;
        }
        for adaptive in site.rooms.iter().filter_map(|r| r.adaptive()) {
            adaptive.refresh().await;
        }
    }
}

#[async_trait]
impl BackgroundService for Keeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // The generation whose rooms the store has been given (0: none yet).
        let mut prepared = 0;
        let mut sweep = tokio::time::interval(self.sweep_interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lease = self.lease.map(|l| l / 3);
        let mut renew = tokio::time::interval(lease.unwrap_or(Duration::from_secs(3600)));
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sweep.tick() => {
                    let site = self.current.load();
                    if prepared != site.generation {
                        match self.store.prepare().await {
                            Ok(()) => prepared = site.generation,
                            Err(e) => {
                                tracing::warn!(error = %e, "store not ready; retrying");
                                continue;
                            }
                        }
                    }
                    if let Some(gate) = &site.gate {
                        gate.sweep(&site.rooms).await;
                    }
                }
                _ = renew.tick(), if lease.is_some() => self.renew().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}
