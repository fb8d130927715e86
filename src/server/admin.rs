//! The admin listener: metrics, health, readiness and live room settings.
//! It listens on its own address (loopback by default), never on the public one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use http::Method;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::{Deserialize, Serialize};

use crate::clients::Sightings;
use crate::config::{Backend, MAX_ADMIT_RATE, MAX_CAPACITY, Secret, State};
use crate::events::VisitorEvents;
use crate::events::event::Change;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::proxy::answers::Capacity;
use crate::proxy::site::Site;
use crate::response::Reply;
use crate::room::{Kind, Room};
use crate::server::reload::{Attempt, Reloader};
use crate::store::{Lane, SettingsPatch, Store};

const MAX_BODY: usize = 64 * 1024;
/// Most synthetic visitors one call adds.
const MAX_SYNTHETIC: u32 = 10_000_000;
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The admin application.
pub struct Admin {
    pub(crate) metrics: Metrics,
    /// The config in force (its rooms, its admin token) and how to reload it.
    pub(crate) reloader: Arc<Reloader>,
    pub(crate) store: Arc<dyn Store>,
    /// Where room changes are told, and the event sinks' health.
    pub(crate) events: VisitorEvents,
    /// Whether a failing event sink makes the instance unready.
    pub(crate) require_sinks: bool,
    pub(crate) lifecycle: Arc<Lifecycle>,
    /// Public listeners, probed by `/readyz`.
    pub(crate) listeners: Vec<SocketAddr>,
    /// Clients behind trusted proxies, for `/readyz?details`.
    pub(crate) clients: Sightings,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomView<'a> {
    #[serde(flatten)]
    capacity: Capacity<'a>,
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admit_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sessions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reserved: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<QueueView>,
    /// An adaptive room's limit now, under its capacity.
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<u32>,
    /// How long an adaptive room still pauses for the upstream's hint.
    #[serde(skip_serializing_if = "Option::is_none")]
    paused_ms: Option<u64>,
}

#[derive(Serialize)]
struct QueueView {
    priority: u32,
    normal: u32,
}

impl<'a> RoomView<'a> {
    fn of(room: &'a Room) -> RoomView<'a> {
        let mut view = RoomView {
            capacity: Capacity::of(room),
            mode: room.mode().as_str(),
            state: None,
            admit_rate: None,
            sessions: None,
            reserved: None,
            queue: None,
            limit: room.adaptive().map(|a| a.limit()),
            paused_ms: room
                .adaptive()
                .and_then(|a| a.paused(std::time::Instant::now()))
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        if let Kind::Sessions(w) = room.kind() {
            let s = w.snapshot();
            view.state = Some(s.settings.state.as_str());
            view.admit_rate = Some(s.settings.admit_rate);
            view.sessions = Some(s.sessions);
            view.reserved = Some(s.reserved);
            view.queue = Some(QueueView {
                priority: s.waiting[0],
                normal: s.waiting[1],
            });
        }
        view
    }
}

/// `GET /admin/config`: what is loaded, since when, and how the last reload went.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigView<'a> {
    file: String,
    generation: u64,
    loaded_at: u64,
    last_reload: Option<Attempt>,
    rooms: Vec<ConfigRoom<'a>>,
    routes: Vec<ConfigRoute<'a>>,
    upstreams: Vec<ConfigUpstream<'a>>,
    store: &'static str,
}

#[derive(Serialize)]
struct ConfigRoom<'a> {
    name: &'a str,
    mode: &'static str,
    capacity: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigRoute<'a> {
    name: &'a str,
    host: Option<&'a str>,
    path_prefix: &'a str,
    upstream: Option<&'a str>,
    room: Option<&'a str>,
}

#[derive(Serialize)]
struct ConfigUpstream<'a> {
    name: &'a str,
    host: &'a str,
    port: u16,
    tls: bool,
}

impl<'a> ConfigView<'a> {
    fn of(site: &'a Site, last_reload: Option<Attempt>) -> ConfigView<'a> {
        let c = &site.config;
        ConfigView {
            file: c.origin.display().to_string(),
            generation: site.generation,
            loaded_at: site
                .loaded_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            last_reload,
            rooms: c
                .rooms
                .iter()
                .map(|r| ConfigRoom {
                    name: &r.name,
                    mode: r.mode().as_str(),
                    capacity: r.capacity,
                })
                .collect(),
            routes: c
                .routes
                .iter()
                .map(|r| ConfigRoute {
                    name: &r.name,
                    host: r.host.as_deref(),
                    path_prefix: &r.path_prefix,
                    upstream: c.upstreams.get(r.upstream).map(|u| u.name.as_str()),
                    room: r.room.and_then(|i| c.rooms.get(i)).map(|r| r.name.as_str()),
                })
                .collect(),
            upstreams: c
                .upstreams
                .iter()
                .map(|u| ConfigUpstream {
                    name: &u.name,
                    host: &u.host,
                    port: u.port,
                    tls: u.tls,
                })
                .collect(),
            store: match c.store.backend {
                Backend::Memory => "memory",
                Backend::Redis(_) => "redis",
            },
        }
    }
}

/// `PATCH /admin/rooms/{name}`: only the fields given change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RoomPatch {
    capacity: Option<u32>,
    state: Option<String>,
    #[serde(alias = "admitRate")]
    admit_rate: Option<f64>,
}

impl Admin {
    fn authorized(&self, session: &ServerSession, token: Option<&Secret>) -> bool {
        let Some(token) = token else {
            return true;
        };
        let given = session
            .req_header()
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        constant_time_eq(given.as_bytes(), token.expose().as_bytes())
    }

    async fn route(&self, session: &mut ServerSession) -> Reply {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        if path == "/healthz" {
            return Reply::text(200, "ok\n");
        }
        let site = self.reloader.current().load();
        let authorized = self.authorized(session, site.config.admin.token.as_ref());
        if path == "/readyz" && method == Method::GET {
            // Probes (a load balancer, Kubernetes) carry no token: they get
            // the status; the details are for the token's holder.
            return self.readyz(authorized).await;
        }
        if !authorized {
            return Reply::error(
                401,
                "UNAUTHORIZED",
                "A valid admin bearer token is required.",
            )
            .header(WWW_AUTHENTICATE, "Bearer realm=\"anteroom-admin\"");
        }
        match (method, path.as_str()) {
            (Method::GET, "/metrics") => Reply::new(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            (Method::POST, "/admin/reload") => {
                let attempt = self.reloader.reload("admin").await;
                Reply::json(if attempt.result == "ok" { 200 } else { 422 }, &attempt)
            }
            (Method::GET, "/admin/config") => {
                Reply::json(200, &ConfigView::of(&site, self.reloader.last()))
            }
            (Method::GET, "/admin/rooms") => {
                for room in site.rooms.iter() {
                    self.refresh(room).await;
                }
                let rooms: Vec<RoomView> = site.rooms.iter().map(RoomView::of).collect();
                Reply::json(200, &rooms)
            }
            (method, p) if p.starts_with("/admin/rooms/") => {
                let name = p.strip_prefix("/admin/rooms/").unwrap_or_default();
                if let Some(name) = name.strip_suffix("/visitors") {
                    return match (method, site.rooms.by_name(name)) {
                        (Method::POST, Some(room)) => self.add_visitors(room, session).await,
                        (Method::POST, None) => {
                            Reply::error(404, "UNKNOWN_ROOM", format!("No room named {name:?}."))
                        }
                        _ => Reply::error(405, "METHOD_NOT_ALLOWED", "Use POST.")
                            .header(http::header::ALLOW, "POST"),
                    };
                }
                let Some(room) = site.rooms.by_name(name) else {
                    return Reply::error(404, "UNKNOWN_ROOM", format!("No room named {name:?}."));
                };
                match method {
                    Method::GET => {
                        self.refresh(room).await;
                        Reply::json(200, &RoomView::of(room))
                    }
                    Method::PATCH => self.patch_room(room, session).await,
                    _ => Reply::error(405, "METHOD_NOT_ALLOWED", "Use GET or PATCH.")
                        .header(http::header::ALLOW, "GET, PATCH"),
                }
            }
            _ => Reply::error(404, "NOT_FOUND", "No such admin endpoint."),
        }
    }

    /// `POST /admin/rooms/{name}/visitors {"count": N, "lane": "normal"}`:
    /// synthetic visitors join the back of the line, to rehearse a spike.
    async fn add_visitors(&self, room: &Room, session: &mut ServerSession) -> Reply {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Add {
            count: u32,
            lane: Option<String>,
        }
        let body = match read_body(session).await {
            Ok(b) => b,
            Err(reply) => return reply,
        };
        let add: Add = match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(e) => return Reply::error(400, "BAD_REQUEST", format!("Invalid JSON body: {e}")),
        };
        let Some(lane) = Lane::parse(add.lane.as_deref().unwrap_or("normal")) else {
            return Reply::error(400, "BAD_REQUEST", "lane must be normal or priority.");
        };
        if add.count == 0 || add.count > MAX_SYNTHETIC {
            return Reply::error(
                400,
                "BAD_REQUEST",
                format!("count must be 1 to {MAX_SYNTHETIC}."),
            );
        }
        let Kind::Sessions(w) = room.kind() else {
            return Reply::error(
                400,
                "BAD_REQUEST",
                "Only sessions rooms have a line of visitors.",
            );
        };
        if let Err(e) = self.store.fill(room.name(), lane, add.count).await {
            return Reply::error(503, "STORE_UNAVAILABLE", e.to_string());
        }
        if let Ok(snapshot) = self.store.snapshot(room.name()).await {
            w.observe(snapshot);
        }
        tracing::info!(
            room = room.name(),
            count = add.count,
            lane = lane.as_str(),
            "synthetic visitors added over the admin API"
        );
        Reply::json(200, &RoomView::of(room))
    }

    /// Fresh numbers from the store for a room whose state lives there
    /// (as last seen when the store does not answer).
    async fn refresh(&self, room: &Room) {
        match room.kind() {
            Kind::Sessions(w) => {
                if let Ok(snapshot) = self.store.snapshot(room.name()).await {
                    w.observe(snapshot);
                }
            }
            Kind::Requests(limits) => {
                let _ = limits.slots.refresh().await;
            }
        }
    }

    async fn patch_room(&self, room: &Room, session: &mut ServerSession) -> Reply {
        let body = match read_body(session).await {
            Ok(b) => b,
            Err(reply) => return reply,
        };
        let patch: RoomPatch = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => return Reply::error(400, "BAD_REQUEST", format!("Invalid JSON body: {e}")),
        };
        if patch
            .capacity
            .is_some_and(|c| !(1..=MAX_CAPACITY).contains(&c))
        {
            return Reply::error(
                400,
                "BAD_REQUEST",
                format!("capacity must be 1 to {MAX_CAPACITY}."),
            );
        }
        let state = match patch.state.as_deref().map(|s| (s, State::parse(s))) {
            None => None,
            Some((_, Some(state))) => Some(state),
            Some((text, None)) => {
                return Reply::error(
                    400,
                    "BAD_REQUEST",
                    format!("state {text:?} is not active, paused or maintenance."),
                );
            }
        };
        if patch
            .admit_rate
            .is_some_and(|r| !r.is_finite() || !(0.0..=MAX_ADMIT_RATE).contains(&r))
        {
            return Reply::error(
                400,
                "BAD_REQUEST",
                format!("admit_rate must be between 0 (unlimited) and {MAX_ADMIT_RATE}."),
            );
        }
        match room.kind() {
            Kind::Requests(_) if state.is_some() || patch.admit_rate.is_some() => {
                return Reply::error(
                    400,
                    "BAD_REQUEST",
                    "state and admit_rate apply to sessions rooms.",
                );
            }
            Kind::Requests(limits) => {
                if let Some(capacity) = patch.capacity {
                    if let Err(e) = limits.slots.set_capacity(capacity).await {
                        return Reply::error(503, "STORE_UNAVAILABLE", e.to_string());
                    }
                    if let Some(adaptive) = limits.adaptive() {
                        adaptive.set_max(capacity);
                    }
                }
            }
            Kind::Sessions(w) => {
                let change = SettingsPatch {
                    capacity: patch.capacity,
                    state,
                    admit_rate: patch.admit_rate,
                };
                match self.store.update(room.name(), change).await {
                    Ok(snapshot) => w.observe(snapshot),
                    Err(e) => return Reply::error(503, "STORE_UNAVAILABLE", e.to_string()),
                }
            }
        }
        self.events.room_changed(
            room.name(),
            Change {
                state: state.map(|s| s.as_str().to_owned()),
                capacity: patch.capacity,
                admit_rate: patch.admit_rate,
            },
        );
        Reply::json(200, &RoomView::of(room))
    }

    async fn readyz(&self, details: bool) -> Reply {
        #[derive(Serialize)]
        struct Ready {
            ready: bool,
            draining: bool,
            listeners: Vec<ListenerState>,
            store: StoreState,
            sinks: Vec<SinkState>,
            clients: ClientState,
        }
        /// Requests through trusted proxies, and those naming no client.
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct ClientState {
            forwarded: u64,
            unknown: u64,
            mostly_unknown: bool,
        }
        #[derive(Serialize)]
        struct SinkState {
            name: String,
            up: bool,
        }
        #[derive(Serialize)]
        struct StoreState {
            backend: &'static str,
            up: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<String>,
        }
        #[derive(Serialize)]
        struct ListenerState {
            address: String,
            up: bool,
        }
        let mut listeners = Vec::with_capacity(self.listeners.len());
        for addr in &self.listeners {
            listeners.push(ListenerState {
                address: addr.to_string(),
                up: probe(*addr).await,
            });
        }
        let draining = self.lifecycle.is_draining();
        // A store outage does not make an instance unready: it still serves
        // admitted visitors and tells newcomers to wait, which is better than
        // every instance leaving the load balancer at once.
        let sinks: Vec<SinkState> = self
            .events
            .sinks()
            .into_iter()
            .map(|(name, up)| SinkState { name, up })
            .collect();
        // Likewise a failing event sink, unless `ready_requires_sinks`: its
        // events wait in the buffer and the dead-letter file.
        let sinks_ok = !self.require_sinks || sinks.iter().all(|s| s.up);
        let ready = !draining && listeners.iter().all(|l| l.up) && sinks_ok;
        let status = if ready { 200 } else { 503 };
        if !details {
            #[derive(Serialize)]
            struct Brief {
                ready: bool,
                draining: bool,
            }
            return Reply::json(status, &Brief { ready, draining });
        }
        let ping = self.store.ping().await;
        let (forwarded, unknown) = self.clients.counts();
        Reply::json(
            status,
            &Ready {
                ready,
                draining,
                listeners,
                store: StoreState {
                    backend: self.store.backend(),
                    up: ping.is_ok(),
                    error: ping.err().map(|e| e.to_string()),
                },
                sinks,
                clients: ClientState {
                    forwarded,
                    unknown,
                    mostly_unknown: self.clients.mostly_unknown(),
                },
            },
        )
    }
}

/// Where to reach a listener from this host: a wildcard address on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// Whether a listener accepts connections.
async fn probe(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(
            PROBE_TIMEOUT,
            tokio::net::TcpStream::connect(reachable(addr))
        )
        .await,
        Ok(Ok(_))
    )
}

/// `anteroom health`: asks the admin listener at `addr` for `/healthz`, as a
/// container's HEALTHCHECK does (the image has no curl). Blocking.
pub fn check_health(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    let target = reachable(addr);
    let mut tcp = std::net::TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| format!("admin listener {target}: {e}"))?;
    tcp.set_read_timeout(Some(timeout))
        .and_then(|()| tcp.set_write_timeout(Some(timeout)))
        .and_then(|()| {
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        })
        .map_err(|e| format!("admin listener {target}: {e}"))?;
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head)
        .map_err(|e| format!("admin listener {target}: {e}"))?;
    if &head[9..12] == b"200" {
        Ok(())
    } else {
        Err(format!(
            "admin listener {target}: /healthz answered {}",
            String::from_utf8_lossy(&head[9..12])
        ))
    }
}

async fn read_body(session: &mut ServerSession) -> Result<BytesMut, Reply> {
    let mut body = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(Reply::error(413, "TOO_LARGE", "The body is too large."));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(Reply::error(
                    400,
                    "BAD_REQUEST",
                    format!("Cannot read the body: {e}"),
                ));
            }
        }
    }
}

/// Compares secrets without an early exit that would leak how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        self.route(session).await.into_response()
    }
}
