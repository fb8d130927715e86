//! The store keeper: the background work of the rooms, off the request path.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::gate::Gate;
use crate::room::Rooms;
use crate::store::Store;

/// Off the request path: sets the store's rooms up, expires lapsed sessions
/// and silent tickets, offers freed slots to the line and refreshes each
/// waiting room's numbers (every `sweep_interval`); renews this instance's
/// request-slot leases (every third of a lease).
pub struct Keeper {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) gate: Option<Arc<Gate>>,
    pub(crate) rooms: Arc<Rooms>,
    pub(crate) sweep_interval: Duration,
}

impl Keeper {
    async fn renew(&self) {
        for slots in self.rooms.shared_slots() {
            if let Err(e) = slots.renew().await {
                tracing::warn!(error = %e, "could not renew request-slot leases");
            }
            let _ = slots.refresh().await;
        }
    }
}

#[async_trait]
impl BackgroundService for Keeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut prepared = false;
        let mut sweep = tokio::time::interval(self.sweep_interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lease = self.rooms.shared_slots().next().map(|s| s.lease() / 3);
        let mut renew = tokio::time::interval(lease.unwrap_or(Duration::from_secs(3600)));
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sweep.tick() => {
                    if !prepared {
                        match self.store.prepare().await {
                            Ok(()) => prepared = true,
                            Err(e) => {
                                tracing::warn!(error = %e, "store not ready; retrying");
                                continue;
                            }
                        }
                    }
                    if let Some(gate) = &self.gate {
                        gate.sweep(&self.rooms).await;
                    }
                }
                _ = renew.tick(), if lease.is_some() => self.renew().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}
