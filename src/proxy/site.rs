//! One loaded configuration as the request path uses it: routes, rooms,
//! upstreams, the gate with its keys, and each route's metric handles. A
//! reload builds a new `Site` beside the running one and swaps it in whole
//! ([`Current`]); a request keeps the `Site` it started with, so it never
//! sees half of two configs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::HeaderValue;
use prometheus::Registry;

use crate::assets::Assets;
use crate::bypass::AppJwt;
use crate::clients::Sightings;
use crate::config::Config;
use crate::events::VisitorEvents;
use crate::events::bus::Bus;
use crate::gate::Gate;
use crate::proxy::traffic::{RouteMetrics, TrafficMetrics};
use crate::proxy::upstream::{Upstream, UpstreamError};
use crate::request::route::Router;
use crate::room::{Kind, Limiters, Room, RoomMetrics, Rooms, WaitingRoom};
use crate::store::{Leases, Store};

/// What outlives a reload: the store and the metric families.
pub struct Shared {
    /// Where the rooms' state lives.
    pub store: Arc<dyn Store>,
    /// The same store as request-slot leases, when it is shared.
    pub leases: Option<Arc<dyn Leases>>,
    /// The rooms' counters.
    pub room_metrics: RoomMetrics,
    /// The routes' counters.
    pub traffic: TrafficMetrics,
    /// The visitor events' counters.
    pub events: VisitorEvents,
    /// Clients behind trusted proxies, and how many are unknown.
    pub clients: Sightings,
}

/// Everything one config builds for the request path.
pub struct Site {
    /// The validated config it was built from.
    pub config: Arc<Config>,
    /// 1 for the config the process started with, one more per reload.
    pub generation: u64,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// The routes.
    pub router: Router,
    /// The rooms, with their live state.
    pub rooms: Arc<Rooms>,
    /// The upstreams, by config index.
    pub upstreams: Vec<Arc<Upstream>>,
    /// The gate of the sessions rooms (`None` without `[tokens]`).
    pub gate: Option<Arc<Gate>>,
    /// Verifiers of the app's tokens.
    pub jwts: Arc<Vec<AppJwt>>,
    /// Metric handles per route (by route index).
    pub route_metrics: Vec<RouteMetrics>,
    /// Clients behind trusted proxies, and how many are unknown.
    pub clients: Sightings,
    /// The `Strict-Transport-Security` of each TLS listener that sends one.
    hsts: Vec<(SocketAddr, HeaderValue)>,
}

impl Shared {
    /// The parts that outlive reloads over `store` (and `leases`, the same
    /// store when it is shared), their metric families registered, visitor
    /// events going to `bus`.
    pub fn register(
        registry: &Registry,
        config: &Config,
        store: Arc<dyn Store>,
        leases: Option<Arc<dyn Leases>>,
        bus: Arc<Bus>,
    ) -> Result<Shared, prometheus::Error> {
        Ok(Shared {
            store,
            leases,
            room_metrics: RoomMetrics::register(registry)?,
            traffic: TrafficMetrics::register(registry)?,
            events: VisitorEvents::register(
                registry,
                &config.attribution,
                bus,
                &config.events.instance,
            )?,
            clients: Sightings::register(registry)?,
        })
    }
}

/// What the site could not be assembled from.
#[derive(Debug, thiserror::Error)]
pub enum AssemblyError {
    /// An upstream could not be set up.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Metrics could not be registered (a bug, not a config problem).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The one assembly of the request path, used by the server, the unit
/// tests and the benches alike: the site built from `config` over
/// `shared`, put in force, with the rooms' gauges registered.
pub fn assemble(
    config: Arc<Config>,
    assets: Assets,
    shared: &Shared,
    registry: &Registry,
) -> Result<Arc<Current>, AssemblyError> {
    let site = Site::build(config, assets, shared, None)?;
    let current = Current::new(site);
    let gauges = Arc::clone(&current);
    Rooms::register_gauges(move || Arc::clone(&gauges.load().rooms), registry)?;
    Ok(current)
}

impl Site {
    /// Builds a site from a validated config and its files. Blocking: it
    /// resolves upstream names. `previous` is the site it replaces: its rooms'
    /// slots and numbers carry over (see [`Rooms::new`]).
    pub fn build(
        config: Arc<Config>,
        assets: Assets,
        shared: &Shared,
        previous: Option<&Site>,
    ) -> Result<Site, UpstreamError> {
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| Upstream::build(u).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let rooms = Arc::new(Rooms::new(
            &config.rooms,
            &assets.pages,
            shared.leases.as_ref(),
            &shared.room_metrics,
            previous.map(|p| &*p.rooms),
        ));
        for (room, _) in rooms.waiting_rooms() {
            shared.events.prepare(room.name());
        }
        let gate = match (&assets.tokens, &config.tokens) {
            (Some(tokens), Some(settings)) => Some(Arc::new(Gate::new(
                Arc::clone(tokens),
                settings,
                Arc::clone(&shared.store),
                Arc::clone(&assets.jwts),
                shared.events.relabeled(&config.attribution),
                config.store.touch_interval,
            ))),
            _ => None,
        };
        let route_metrics = config
            .routes
            .iter()
            .map(|r| {
                let upstream = config
                    .upstreams
                    .get(r.upstream)
                    .map_or("-", |u| u.name.as_str());
                shared.traffic.route(&r.name, upstream)
            })
            .collect();
        let hsts = config
            .server
            .tls
            .iter()
            .filter_map(|t| {
                let value = HeaderValue::from_str(&t.hsts?.value()).ok()?;
                Some((t.listen, value))
            })
            .collect();
        Ok(Site {
            hsts,
            generation: previous.map_or(1, |p| p.generation + 1),
            loaded_at: SystemTime::now(),
            router: Router::new(config.routes.clone()),
            rooms,
            upstreams,
            gate,
            jwts: assets.jwts,
            route_metrics,
            clients: shared.clients.clone(),
            config,
        })
    }

    /// The `Strict-Transport-Security` to send on a connection that arrived
    /// over TLS at `local`, if its listener has `hsts`.
    pub fn hsts(&self, local: SocketAddr) -> Option<&HeaderValue> {
        self.hsts
            .iter()
            .find(|(listen, _)| {
                listen.port() == local.port()
                    && (listen.ip().is_unspecified() || listen.ip() == local.ip())
            })
            .map(|(_, value)| value)
    }

    /// The room a route guards.
    pub fn room_of_route(&self, route: usize) -> Option<&Room> {
        self.rooms.get(self.router.get(route)?.room?)
    }

    /// The waiting room a route leads to, if its room is a sessions room.
    pub fn waiting_room_of_route(&self, route: usize) -> Option<(&Room, &WaitingRoom)> {
        let room = self.room_of_route(route)?;
        match room.kind() {
            Kind::Sessions(w) => Some((room, w)),
            Kind::Requests(_) => None,
        }
    }

    /// The `requests` room a route guards, with its limiters.
    pub fn request_room_of_route(&self, route: usize) -> Option<(&Room, &Limiters)> {
        let room = self.room_of_route(route)?;
        match room.kind() {
            Kind::Requests(limits) => Some((room, limits)),
            Kind::Sessions(_) => None,
        }
    }

    /// The upstream a route forwards to.
    pub fn upstream_of_route(&self, route: usize) -> Option<&Arc<Upstream>> {
        self.upstreams.get(self.router.get(route)?.upstream)
    }
}

/// The site in force, replaced whole at each reload.
pub struct Current {
    site: ArcSwap<Site>,
    generation: AtomicU64,
}

impl Current {
    /// The site the process starts with.
    pub fn new(site: Site) -> Arc<Current> {
        Arc::new(Current {
            generation: AtomicU64::new(site.generation),
            site: ArcSwap::from_pointee(site),
        })
    }

    /// The site now; it stays valid for as long as it is held.
    pub fn load(&self) -> Arc<Site> {
        self.site.load_full()
    }

    /// The generation now, without touching the site.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Puts a new site in force for the requests that start from now on.
    pub fn replace(&self, site: Site) {
        let generation = site.generation;
        self.site.store(Arc::new(site));
        self.generation.store(generation, Ordering::Release);
    }
}
