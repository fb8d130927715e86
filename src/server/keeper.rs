//! The store keeper: the background work of the rooms, off the request path.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::proxy::site::Current;
use crate::store::Store;

/// Off the request path: sets the store's rooms up, expires lapsed sessions
/// and silent tickets, offers freed slots to the line and refreshes each
/// waiting room's numbers (every `sweep_interval`); keeps this instance's
/// request-slot allowances renewed and matched to demand, and reads the
/// rooms' use (every third of a lease). It works on the rooms of
/// the config in force, and sets them up again after a reload.
pub struct Keeper {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) current: Arc<Current>,
    pub(crate) sweep_interval: Duration,
    /// How long a request-slot lease lasts in a shared store.
    pub(crate) lease: Option<Duration>,
}

/// How often each shared `requests` room's allowance is looked at (and set
/// again in the store only when it should change or be renewed).
const REBALANCE: Duration = Duration::from_millis(50);

impl Keeper {
    async fn rebalance(&self) {
        let site = self.current.load();
        for slots in site.rooms.shared_slots() {
            if let Err(e) = slots.rebalance().await {
                tracing::warn!(error = %e, "could not renew a request-slot allowance");
            }
        }
    }

    async fn refresh(&self) {
        let site = self.current.load();
        for slots in site.rooms.shared_slots() {
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
        let mut refresh = tokio::time::interval(lease.unwrap_or(Duration::from_secs(3600)));
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rebalance = tokio::time::interval(REBALANCE);
        rebalance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                _ = rebalance.tick(), if lease.is_some() => self.rebalance().await,
                _ = refresh.tick(), if lease.is_some() => self.refresh().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}
