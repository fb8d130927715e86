//! How the process stops: which signals drain it, and the exit as soon as
//! the last in-flight request is done.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{SignalKind, signal};

use crate::lifecycle::Lifecycle;
use crate::proxy::connections::Active;
use crate::server::snapshots::Snapshots;

/// SIGTERM and SIGINT drain gracefully (a container stop and a Ctrl-C both
/// let in-flight requests finish); SIGQUIT hands the sockets to a new process.
pub struct Signals {
    pub(crate) lifecycle: Arc<Lifecycle>,
    pub(crate) grace_period: Duration,
    /// The memory store's state, handed to the new process on SIGQUIT.
    pub(crate) snapshots: Option<Arc<Snapshots>>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let kinds = [
            SignalKind::terminate(),
            SignalKind::interrupt(),
            SignalKind::quit(),
        ];
        let [Ok(mut term), Ok(mut int), Ok(mut quit)] = kinds.map(signal) else {
            tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
            return std::future::pending().await;
        };
        let (name, kind) = tokio::select! {
            _ = term.recv() => ("SIGTERM", ShutdownSignal::GracefulTerminate),
            _ = int.recv() => ("SIGINT", ShutdownSignal::GracefulTerminate),
            _ = quit.recv() => ("SIGQUIT", ShutdownSignal::GracefulUpgrade),
        };
        self.lifecycle.start_draining();
        if let (ShutdownSignal::GracefulUpgrade, Some(snapshots)) = (&kind, &self.snapshots) {
            // Written before the sockets go: the new process reads it once it has them.
            snapshots.hand_over().await;
        }
        tracing::info!(
            signal = name,
            in_flight = self.lifecycle.in_flight(),
            grace_period = %humantime::format_duration(self.grace_period),
            "shutting down: no new connections; in-flight requests may finish"
        );
        kind
    }
}

/// Ends the process as soon as the last in-flight request is done, instead of
/// always sleeping the whole grace period; a second signal ends it at once.
pub struct Drain {
    pub(crate) lifecycle: Arc<Lifecycle>,
    /// Connections whose request has not reached the proxy yet count too.
    pub(crate) connections: Active,
    /// Written once the last request is done.
    pub(crate) snapshots: Option<Arc<Snapshots>>,
}

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.wait_for(|stopping| *stopping).await.is_err() {
            return;
        }
        let mut again = [SignalKind::terminate(), SignalKind::interrupt()].map(signal);
        let second = async {
            match &mut again {
                [Ok(term), Ok(int)] => {
                    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                }
                _ => std::future::pending().await,
            }
        };
        let drained = async {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            // Counted only once nothing more is accepted, and once the tasks
            // of the last accepted connections have had a tick to start:
            // else a connection accepted an instant before would be cut.
            while !self.connections.closed() {
                tick.tick().await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            while self.lifecycle.in_flight() > 0 || self.connections.count() > 0 {
                tick.tick().await;
            }
        };
        tokio::select! {
            _ = drained => {
                if let Some(snapshots) = &self.snapshots {
                    snapshots.save("stop").await;
                }
                tracing::info!("all in-flight requests finished; exiting");
                crate::logging::flush();
                std::process::exit(0);
            }
            _ = second => {
                if let Some(snapshots) = &self.snapshots {
                    snapshots.save("stop").await;
                }
                tracing::warn!(in_flight = self.lifecycle.in_flight(), "second signal: exiting now");
                crate::logging::flush();
                std::process::exit(130);
            }
        }
    }
}
