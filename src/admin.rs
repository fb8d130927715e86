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

use crate::api::Capacity;
use crate::config::Secret;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::respond::Reply;
use crate::room::{Room, Rooms};

const MAX_BODY: usize = 64 * 1024;
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The admin application.
pub struct Admin {
    pub(crate) token: Option<Secret>,
    pub(crate) metrics: Metrics,
    pub(crate) rooms: Arc<Rooms>,
    pub(crate) lifecycle: Arc<Lifecycle>,
    /// Public listeners, probed by `/readyz`.
    pub(crate) listeners: Vec<SocketAddr>,
}

#[derive(Serialize)]
struct RoomView<'a> {
    #[serde(flatten)]
    capacity: Capacity<'a>,
    mode: &'static str,
}

impl<'a> RoomView<'a> {
    fn of(room: &'a Room) -> RoomView<'a> {
        RoomView {
            capacity: Capacity::of(room),
            mode: room.mode().as_str(),
        }
    }
}

/// `PATCH /admin/rooms/{name}`: only the fields given change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomPatch {
    capacity: Option<u32>,
}

impl Admin {
    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(token) = &self.token else {
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
        if !self.authorized(session) {
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
            (Method::GET, "/readyz") => self.readyz().await,
            (Method::GET, "/admin/rooms") => {
                let rooms: Vec<RoomView> = self.rooms.iter().map(RoomView::of).collect();
                Reply::json(200, &rooms)
            }
            (method, p) if p.starts_with("/admin/rooms/") => {
                let name = &p["/admin/rooms/".len()..];
                let Some(room) = self.rooms.by_name(name) else {
                    return Reply::error(404, "UNKNOWN_ROOM", format!("No room named {name:?}."));
                };
                match method {
                    Method::GET => Reply::json(200, &RoomView::of(room)),
                    Method::PATCH => self.patch_room(room, session).await,
                    _ => Reply::error(405, "METHOD_NOT_ALLOWED", "Use GET or PATCH.")
                        .header(http::header::ALLOW, "GET, PATCH"),
                }
            }
            _ => Reply::error(404, "NOT_FOUND", "No such admin endpoint."),
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
        if let Some(capacity) = patch.capacity {
            if capacity == 0 {
                return Reply::error(400, "BAD_REQUEST", "capacity must be at least 1.");
            }
            room.slots().set_capacity(capacity);
            tracing::info!(
                room = room.name(),
                capacity,
                "room capacity changed over the admin API"
            );
        }
        Reply::json(200, &RoomView::of(room))
    }

    async fn readyz(&self) -> Reply {
        #[derive(Serialize)]
        struct Ready {
            ready: bool,
            draining: bool,
            listeners: Vec<ListenerState>,
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
        let ready = !draining && listeners.iter().all(|l| l.up);
        Reply::json(
            if ready { 200 } else { 503 },
            &Ready {
                ready,
                draining,
                listeners,
            },
        )
    }
}

/// Whether a listener accepts connections; a wildcard address is probed on loopback.
async fn probe(addr: SocketAddr) -> bool {
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(target)).await,
        Ok(Ok(_))
    )
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
