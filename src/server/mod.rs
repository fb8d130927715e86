//! Assembles a Pingora server from a validated config: the proxy on the
//! public listeners, the admin app on its own, and the background tasks;
//! and runs it with anteroom's shutdown behaviour.

pub mod admin;
pub mod keeper;
pub mod reload;
pub mod setup;
pub mod shutdown;
pub mod snapshots;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::HttpServerOptions;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignalWatch};
use pingora::services::background::{GenBackgroundService, background_service};
use pingora::services::listening::Service;
use prometheus::Registry;

use pingora::listeners::tls::TlsSettings;

use crate::assets::Assets;
use crate::config::{Backend, Config};
use crate::events::bus::{Bus, BusMetrics, Outbox};
use crate::events::sinks::{self, Delivery};
use crate::lifecycle::Lifecycle;
use crate::logging;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::proxy::connections::{self, Bounded, ConnectionMetrics, Limits, Sweeper};
use crate::proxy::site::{self, Current, Shared};
use crate::proxy::sse::{Listener, Streams};
use crate::proxy::traffic::{NO_UPSTREAM, OWN_ROUTE, UNROUTED};
use crate::proxy::upstream::Resolver;
use crate::server::admin::Admin;
use crate::server::keeper::Keeper;
use crate::server::reload::{Hangups, Reloader};
pub use crate::server::setup::SetupError;
use crate::server::shutdown::{Drain, Signals};
use crate::server::snapshots::{Snapshots, Writer};
use crate::server::tls::Certificate;
use crate::store::memory::{MemoryStore, SavedSlots};
use crate::store::redis::RedisStore;
use crate::store::state_file::StateFile;
use crate::store::{Leases, Observed, RoomSpec, Store, StoreMetrics};

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
    snapshots: Option<Arc<Snapshots>>,
}

/// What the services share.
struct Parts {
    metrics: Metrics,
    lifecycle: Arc<Lifecycle>,
    shared: Arc<Shared>,
    current: Arc<Current>,
    snapshots: Option<Arc<Snapshots>>,
    /// Each event sink's buffer, for its delivery task.
    outlets: Vec<Arc<Outbox>>,
}

impl App {
    /// Builds everything the config describes. Blocking: it loads the files
    /// the config names, checks the listeners can be bound and resolves
    /// upstream names, so call it before running.
    ///
    /// With `upgrade`, it first takes the listening sockets of the running
    /// process over `[server] upgrade_sock` (waiting until that process is
    /// sent SIGQUIT), and only then reads the state it saved.
    pub fn build(config: &Config, exit: Exit, upgrade: bool) -> Result<App, SetupError> {
        let assets = Assets::load(config)?;
        if !upgrade {
            check_bindable(config)?;
        }
        // rustls needs one process-wide provider; the Redis client's TLS uses it too.
        pingora::tls::install_default_crypto_provider();
        let opt = Opt {
            upgrade,
            ..Opt::default()
        };
        let mut server = Server::new_with_opt_and_conf(Some(opt), server_conf(&config.server));
        server.bootstrap();
        let mut parts = Parts::new(config, assets)?;

        let (public, sweeper, certificates) = public_service(&server, config, &parts)?;
        let active = sweeper.active();
        server.add_service(public);
        server.add_service(background_service("connection deadlines", sweeper));
        let reloader = Arc::new(Reloader::new(
            config.origin.clone(),
            Arc::clone(&parts.current),
            Arc::clone(&parts.shared),
            certificates,
            parts.metrics.registry(),
        )?);
        server.add_service(admin_service(config, &parts, &reloader));
        let hangups = Hangups::install(reloader).map_err(SetupError::Signals)?;
        server.add_service(background_service("reload on SIGHUP", hangups));
        let current = Arc::clone(&parts.current);
        let resolver = Resolver::new(move || current.load().upstreams.clone());
        server.add_service(background_service("resolver", resolver));
        let keeper = Keeper {
            store: Arc::clone(&parts.shared.store),
            current: Arc::clone(&parts.current),
            sweep_interval: config.store.sweep_interval,
            lease: match &config.store.backend {
                Backend::Memory => None,
                Backend::Redis(r) => Some(r.lease),
            },
        };
        server.add_service(background_service("store keeper", keeper));
        let listener = Listener {
            store: Arc::clone(&parts.shared.store),
        };
        server.add_service(background_service("reservations", listener));
        for delivery in deliveries(config, std::mem::take(&mut parts.outlets))? {
            server.add_service(delivery);
        }
        if let Some(snapshots) = &parts.snapshots {
            server.add_service(background_service(
                "state snapshots",
                Writer(Arc::clone(snapshots)),
            ));
        }
        if exit == Exit::WhenDrained {
            let drain = Drain {
                lifecycle: Arc::clone(&parts.lifecycle),
                connections: active,
                snapshots: parts.snapshots.clone(),
            };
            server.add_service(background_service("drain", drain));
        }
        Ok(App {
            server,
            lifecycle: parts.lifecycle,
            grace_period: config.server.grace_period,
            snapshots: parts.snapshots,
        })
    }

    /// Runs until SIGTERM or SIGINT (graceful: in-flight requests get the
    /// grace period) or SIGQUIT (hand sockets to a new process, then the same).
    pub fn run(self) {
        let signals = Signals {
            lifecycle: Arc::clone(&self.lifecycle),
            grace_period: self.grace_period,
            snapshots: self.snapshots.clone(),
        };
        self.run_until(Box::new(signals));
    }

    /// Runs until the given watch says to stop; then writes the state a
    /// last time (when it is kept and was not handed to a new process).
    pub fn run_until(self, shutdown: Box<dyn ShutdownSignalWatch>) {
        self.server.run(RunArgs {
            shutdown_signal: shutdown,
        });
        if let Some(snapshots) = &self.snapshots {
            snapshots.save_blocking("stop");
        }
    }
}

impl Parts {
    fn new(config: &Config, assets: Assets) -> Result<Parts, SetupError> {
        let metrics = Metrics::new()?;
        let registry = metrics.registry();
        let events = &config.events;
        let names: Vec<String> = events.sinks.iter().map(|s| s.name.clone()).collect();
        let bus_metrics = BusMetrics::register(registry)?;
        let (bus, outlets) = Bus::new(
            &names,
            events.buffer,
            events.batch,
            events.on_full,
            &bus_metrics,
        );
        let opened = open_store(config, registry)?;
        let shared = Arc::new(Shared::register(
            registry,
            config,
            opened.store,
            opened.leases,
            Arc::new(bus),
        )?);
        let current = site::assemble(Arc::new(config.clone()), assets, &shared, registry)?;
        let snapshots = match opened.saved {
            None => None,
            Some(saved) => {
                snapshots::apply(&saved.slots, &current);
                Some(Arc::new(Snapshots::new(
                    saved.store,
                    saved.file,
                    Arc::clone(&current),
                    saved.interval,
                    registry,
                )?))
            }
        };
        Ok(Parts {
            metrics,
            lifecycle: Lifecycle::new(),
            shared,
            current,
            snapshots,
            outlets,
        })
    }
}

/// One delivery task per event sink, with its dead-letter directory made.
fn deliveries(
    config: &Config,
    outlets: Vec<Arc<Outbox>>,
) -> Result<Vec<GenBackgroundService<Delivery>>, SetupError> {
    let events = &config.events;
    let Some(dir) = &events.dead_letter_dir else {
        return Ok(Vec::new());
    };
    if events.sinks.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir).map_err(|source| SetupError::DeadLetters {
        dir: dir.clone(),
        source,
    })?;
    outlets
        .into_iter()
        .zip(&events.sinks)
        .map(|(outlet, sink)| {
            let open =
                sinks::open(&sink.kind, events.timeout).map_err(|source| SetupError::Sink {
                    name: sink.name.clone(),
                    source,
                })?;
            let delivery = Delivery::new(outlet, open, dir, events, config.server.grace_period);
            Ok(background_service(
                &format!("events to {}", sink.name),
                delivery,
            ))
        })
        .collect()
}

fn server_conf(s: &crate::config::Server) -> ServerConf {
    ServerConf {
        threads: s.threads,
        work_stealing: s.work_stealing,
        upstream_keepalive_pool_size: s.upstream_keepalive_pool,
        // Pingora counts whole seconds; round up so the grace is never shorter.
        grace_period_seconds: Some(
            s.grace_period.as_secs() + u64::from(s.grace_period.subsec_nanos() > 0),
        ),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: s.upgrade_sock.to_string_lossy().into_owned(),
        ..ServerConf::default()
    }
}

/// The public listeners' service: the proxy behind the connection limits.
type PublicService = Service<Bounded<HttpProxy<Proxy>>>;

/// Each TLS listener's certificate, replaced at a reload.
type Certificates = Vec<(SocketAddr, Arc<Certificate>)>;

/// The proxy on the public listeners, behind the connection limits; the
/// sweeper of their deadlines; and the TLS listeners' certificates.
fn public_service(
    server: &Server,
    config: &Config,
    parts: &Parts,
) -> Result<(PublicService, Sweeper, Certificates), SetupError> {
    let proxy = Proxy {
        site: Arc::clone(&parts.current),
        lifecycle: Arc::clone(&parts.lifecycle),
        own_metrics: parts.shared.traffic.route(OWN_ROUTE, NO_UPSTREAM),
        unrouted_metrics: parts.shared.traffic.route(UNROUTED, NO_UPSTREAM),
        streams: Streams::register(parts.metrics.registry())?,
    };
    let s = &config.server;
    let registry = parts.metrics.registry();
    let routine = logging::routine();
    registry.register(Box::new(routine.tls_handshake_failures.clone()))?;
    registry.register(Box::new(routine.client_disconnects.clone()))?;
    registry.register(Box::new(routine.http2_handshake_failures.clone()))?;
    let mut http = pingora::proxy::http_proxy(&server.configuration, proxy);
    if s.h2c {
        // The options are non-exhaustive: made from the default.
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        http.server_options = Some(options);
    }
    let (guard, sweeper) = connections::guard(
        http,
        Limits {
            header_timeout: s.header_timeout,
            idle_timeout: s.keepalive_timeout,
            max: s.max_connections,
        },
        ConnectionMetrics::register(registry)?,
    );
    let mut public = Service::new("anteroom".to_owned(), guard);
    for addr in &s.listen {
        public.add_tcp(&addr.to_string());
    }
    let mut certificates = Vec::new();
    for tls in &s.tls {
        let error = |reason: String| SetupError::Tls {
            addr: tls.listen,
            reason,
        };
        let certificate = Certificate::load(&tls.cert, &tls.key).map_err(error)?;
        let mut settings = TlsSettings::intermediate("", "").map_err(|e| error(e.to_string()))?;
        settings.set_cert_resolver(Arc::clone(&certificate) as _);
        // ALPN: h2 for the browsers that offer it, HTTP/1.1 for the rest.
        settings.enable_h2();
        public.add_tls_with_settings(&tls.listen.to_string(), None, settings);
        certificates.push((tls.listen, certificate));
    }
    Ok((public, sweeper, certificates))
}

/// The admin app, on its own listener with one thread.
fn admin_service(config: &Config, parts: &Parts, reloader: &Arc<Reloader>) -> Service<Admin> {
    let s = &config.server;
    let mut admin = Service::new(
        "anteroom admin".to_owned(),
        Admin {
            metrics: parts.metrics.clone(),
            reloader: Arc::clone(reloader),
            store: Arc::clone(&parts.shared.store),
            events: parts.shared.events.clone(),
            require_sinks: config.events.ready_requires_sinks,
            lifecycle: Arc::clone(&parts.lifecycle),
            clients: parts.shared.clients.clone(),
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
    admin
}

/// Refuses to start on an address that is taken, with the config key in the
/// message: Pingora would otherwise fail inside its listener task and leave a
/// process running that serves nothing.
fn check_bindable(config: &Config) -> Result<(), SetupError> {
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
        std::net::TcpListener::bind(addr).map_err(|source| SetupError::Bind {
            key,
            addr,
            source,
        })?;
    }
    Ok(())
}

/// The store as the services use it.
struct Opened {
    store: Arc<dyn Store>,
    /// The same store as request-slot leases, when it is shared.
    leases: Option<Arc<dyn Leases>>,
    /// The memory store kept on disk (`state_dir`).
    saved: Option<Saved>,
}

/// A memory store with `state_dir`, as restored.
struct Saved {
    store: Arc<Observed<MemoryStore>>,
    file: StateFile,
    interval: std::time::Duration,
    slots: Vec<SavedSlots>,
}

fn open_store(config: &Config, registry: &Registry) -> Result<Opened, SetupError> {
    let metrics = StoreMetrics::register(registry)?;
    let specs = RoomSpec::of_config(config);
    Ok(match (&config.store.backend, &config.store.state) {
        (Backend::Memory, None) => Opened {
            store: Arc::new(Observed::new(MemoryStore::new(&specs), metrics)),
            leases: None,
            saved: None,
        },
        (Backend::Memory, Some(state)) => {
            let (file, store, slots) = snapshots::restore(state, &specs)?;
            let store = Arc::new(Observed::new(store, metrics));
            Opened {
                store: store.clone(),
                leases: None,
                saved: Some(Saved {
                    store,
                    file,
                    interval: state.interval,
                    slots,
                }),
            }
        }
        (Backend::Redis(redis), _) => {
            let request_rooms: Vec<(String, u32)> = config
                .rooms
                .iter()
                .filter(|r| r.requests().is_some())
                .map(|r| (r.name.clone(), r.capacity))
                .collect();
            let store =
                RedisStore::new(redis, &specs, &request_rooms, config.store.sweep_interval)?
                    .with_rebuild_grace(config.store.rebuild_grace);
            let shared = Arc::new(Observed::new(store, metrics));
            Opened {
                store: shared.clone(),
                leases: Some(shared),
                saved: None,
            }
        }
    })
}
