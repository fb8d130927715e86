//! Assembles a Pingora server from a validated config: the proxy on the public
//! listeners, the admin app on its own, and the background tasks; and runs it
//! with anteroom's shutdown behaviour.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{BackgroundService, background_service};
use pingora::services::listening::Service;
use tokio::signal::unix::{SignalKind, signal};

use crate::admin::Admin;
use crate::assets::Assets;
use crate::config::{Backend, Config, ConfigError};
use crate::gate::Gate;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::room::Rooms;
use crate::route::Router;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
use crate::store::{Leases, Observed, RoomSpec, Store};
use crate::upstream::{Resolver, Upstream, UpstreamError};

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address cannot be bound (in use, or not an address of this host).
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// Config key of the listener.
        key: String,
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// An upstream could not be set up.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A TLS listener's certificate or key was refused.
    #[error("server.tls listener {addr}: {reason}")]
    Tls {
        /// The address.
        addr: SocketAddr,
        /// Pingora's message.
        reason: String,
    },
    /// Metrics could not be registered (a bug, not a config problem).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A file the config names holds something unusable (a key, a template).
    #[error(transparent)]
    Assets(#[from] ConfigError),
    /// The store could not be set up.
    #[error("{0}")]
    Setup(String),
}

/// How the process ends after a shutdown signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exit as soon as in-flight requests have finished (the binary).
    WhenDrained,
    /// Stay in Pingora's own shutdown sequence (in-process embedding, tests).
    AfterGracePeriod,
}

/// A server with every anteroom service added, ready to run.
pub struct App {
    /// The Pingora server.
    pub server: Server,
    /// Shared with the proxy and admin listener.
    pub lifecycle: Arc<Lifecycle>,
    grace_period: Duration,
}

impl App {
    /// Builds everything the config describes. Blocking: it binds-checks the
    /// listeners and resolves upstream names, so call it before running.
    pub fn build(config: &Config, exit: Exit) -> Result<App, StartError> {
        let assets = Assets::load(config)?;
        check_bindable(config)?;
        // rustls needs one process-wide provider; the Redis client's TLS uses it too.
        pingora::tls::install_default_crypto_provider();
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| Upstream::build(u).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let metrics = Metrics::register()?;
        let lifecycle = Lifecycle::new();
        let (store, leases) = open_store(config, &metrics)?;
        let rooms = Arc::new(Rooms::new(&config.rooms, &assets.pages, leases.as_ref()));
        metrics.watch_rooms(Arc::clone(&rooms))?;
        let jwts = assets.jwts;
        let gate = assets.tokens.map(|tokens| {
            Arc::new(Gate::new(
                tokens,
                Arc::clone(&store),
                Arc::clone(&jwts),
                config,
                metrics.clone(),
                config.store.touch_interval,
            ))
        });

        let s = &config.server;
        let conf = ServerConf {
            threads: s.threads,
            work_stealing: s.work_stealing,
            upstream_keepalive_pool_size: s.upstream_keepalive_pool,
            // Pingora counts whole seconds; round up so the grace is never shorter.
            grace_period_seconds: Some(
                s.grace_period.as_secs() + u64::from(s.grace_period.subsec_nanos() > 0),
            ),
            graceful_shutdown_timeout_seconds: Some(1),
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();

        let resolver = Resolver::new(&upstreams);
        let route_metrics = config
            .routes
            .iter()
            .map(|r| {
                let upstream = config
                    .upstreams
                    .get(r.upstream)
                    .map_or("-", |u| u.name.as_str());
                metrics.route(&r.name, upstream)
            })
            .collect();
        let proxy = Proxy {
            server: s.clone(),
            route_metrics,
            unrouted_metrics: metrics.route("-", "-"),
            room_metrics: config.rooms.iter().map(|r| metrics.room(&r.name)).collect(),
            router: Router::new(config.routes.clone()),
            rooms: Arc::clone(&rooms),
            upstreams,
            metrics: metrics.clone(),
            lifecycle: Arc::clone(&lifecycle),
            gate: gate.clone(),
            jwts,
        };
        let mut public =
            pingora::proxy::http_proxy_service_with_name(&server.configuration, proxy, "anteroom");
        for addr in &s.listen {
            public.add_tcp(&addr.to_string());
        }
        for tls in &s.tls {
            public
                .add_tls(
                    &tls.listen.to_string(),
                    &tls.cert.to_string_lossy(),
                    &tls.key.to_string_lossy(),
                )
                .map_err(|e| StartError::Tls {
                    addr: tls.listen,
                    reason: e.to_string(),
                })?;
        }
        server.add_service(public);

        let mut admin = Service::new(
            "anteroom admin".to_owned(),
            Admin {
                token: config.admin.token.clone(),
                metrics,
                rooms: Arc::clone(&rooms),
                store: Arc::clone(&store),
                lifecycle: Arc::clone(&lifecycle),
                listeners: s
                    .listen
                    .iter()
                    .copied()
                    .chain(s.tls.iter().map(|t| t.listen))
                    .collect(),
            },
        );
        admin.threads = Some(1);
        admin.add_tcp(&config.admin.listen.to_string());
        server.add_service(admin);

        if let Some(resolver) = resolver {
            server.add_service(background_service("resolver", resolver));
        }
        server.add_service(background_service(
            "store keeper",
            Keeper {
                store,
                gate,
                rooms,
                sweep_interval: config.store.sweep_interval,
            },
        ));
        if exit == Exit::WhenDrained {
            server.add_service(background_service(
                "drain",
                Drain {
                    lifecycle: Arc::clone(&lifecycle),
                },
            ));
        }
        Ok(App {
            server,
            lifecycle,
            grace_period: s.grace_period,
        })
    }

    /// Runs until SIGTERM or SIGINT (graceful: in-flight requests get the
    /// grace period) or SIGQUIT (hand sockets to a new process, then the same).
    pub fn run(self) {
        let signals = Signals {
            lifecycle: Arc::clone(&self.lifecycle),
            grace_period: self.grace_period,
        };
        self.run_until(Box::new(signals));
    }

    /// Runs until the given watch says to stop.
    pub fn run_until(self, shutdown: Box<dyn ShutdownSignalWatch>) {
        self.server.run(RunArgs {
            shutdown_signal: shutdown,
        });
    }
}

/// Refuses to start on an address that is taken, with the config key in the
/// message: Pingora would otherwise fail inside its listener task and leave a
/// process running that serves nothing.
fn check_bindable(config: &Config) -> Result<(), StartError> {
    let s = &config.server;
    let listeners = s
        .listen
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("server.listen[{i}]"), *a))
        .chain(
            s.tls
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("server.tls[{i}].listen"), t.listen)),
        )
        .chain(std::iter::once((
            "admin.listen".to_owned(),
            config.admin.listen,
        )));
    for (key, addr) in listeners {
        std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind {
            key,
            addr,
            source,
        })?;
    }
    Ok(())
}

/// SIGTERM and SIGINT drain gracefully (a container stop and a Ctrl-C both
/// let in-flight requests finish); SIGQUIT hands the sockets to a new process.
struct Signals {
    lifecycle: Arc<Lifecycle>,
    grace_period: Duration,
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
        tracing::info!(
            signal = name,
            in_flight = self.lifecycle.in_flight(),
            grace_period = %humantime::format_duration(self.grace_period),
            "shutting down: no new connections; in-flight requests may finish"
        );
        kind
    }
}

/// The store, as a shared `Store` and, for a shared store, as request-slot `Leases`.
type Stores = (Arc<dyn Store>, Option<Arc<dyn Leases>>);

fn open_store(config: &Config, metrics: &Metrics) -> Result<Stores, StartError> {
    let specs: Vec<RoomSpec> = config
        .rooms
        .iter()
        .filter_map(|r| {
            let s = r.sessions.as_ref()?;
            Some(RoomSpec::from_config(&r.name, r.capacity, s))
        })
        .collect();
    Ok(match &config.store.backend {
        Backend::Memory => (
            Arc::new(Observed::new(MemoryStore::new(&specs), metrics.clone())),
            None,
        ),
        Backend::Redis(redis) => {
            let request_rooms: Vec<(String, u32)> = config
                .rooms
                .iter()
                .filter(|r| r.sessions.is_none())
                .map(|r| (r.name.clone(), r.capacity))
                .collect();
            let store = RedisStore::new(redis, &specs, &request_rooms, config.store.sweep_interval)
                .map_err(|e| StartError::Setup(e.to_string()))?;
            let shared = Arc::new(Observed::new(store, metrics.clone()));
            (shared.clone(), Some(shared))
        }
    })
}

/// Off the request path: sets the store's rooms up, expires lapsed sessions
/// and silent tickets, offers freed slots to the line and refreshes each
/// waiting room's numbers (every `sweep_interval`); renews this instance's
/// request-slot leases (every third of a lease).
struct Keeper {
    store: Arc<dyn Store>,
    gate: Option<Arc<Gate>>,
    rooms: Arc<Rooms>,
    sweep_interval: Duration,
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

/// Ends the process as soon as the last in-flight request is done, instead of
/// always sleeping the whole grace period; a second signal ends it at once.
struct Drain {
    lifecycle: Arc<Lifecycle>,
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
            while self.lifecycle.in_flight() > 0 {
                tick.tick().await;
            }
        };
        tokio::select! {
            _ = drained => {
                tracing::info!("all in-flight requests finished; exiting");
                crate::logging::flush();
                std::process::exit(0);
            }
            _ = second => {
                tracing::warn!(in_flight = self.lifecycle.in_flight(), "second signal: exiting now");
                crate::logging::flush();
                std::process::exit(130);
            }
        }
    }
}
