//! The Pingora glue: routes each request, lets its room decide (a slot for a
//! `requests` room, the gate for a `sessions` room), forwards it and records
//! how it ended. Decisions live in `route`, `slots` and `gate`; this file only
//! carries them out.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::HeaderValue;
use http::header::{AUTHORIZATION, HOST, RETRY_AFTER, SET_COOKIE};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};
use serde::Serialize;

use crate::api::{self, CookieJar};
use crate::bypass::{self, AppJwt};
use crate::client;
use crate::config;
use crate::config::OnStoreError;
use crate::gate::{Decision, Gate, PASS_COOKIE, PassSource, TICKET_COOKIE, Visit, Visitor};
use crate::leases::{NoSlot, SharedPermit};
use crate::lifecycle::{InFlight, Lifecycle};
use crate::metrics::{Metrics, RoomMetrics, RouteMetrics};
use crate::page::PageState;
use crate::respond::Reply;
use crate::room::{Kind, Room, Rooms};
use crate::route::Router;
use crate::slots::Permit;
use crate::upstream::Upstream;

/// Headers under this prefix are anteroom's to set; a client cannot pass its own upstream.
const RESERVED_HEADER_PREFIX: &str = "x-anteroom-";
/// The response header through which the app ends a visitor's session.
const COMMAND_HEADER: &str = "anteroom-command";

/// Everything the request path needs, shared by all worker threads.
pub struct Proxy {
    pub(crate) server: config::Server,
    pub(crate) router: Router,
    pub(crate) rooms: Arc<Rooms>,
    pub(crate) upstreams: Vec<Arc<Upstream>>,
    pub(crate) metrics: Metrics,
    pub(crate) lifecycle: Arc<Lifecycle>,
    pub(crate) gate: Option<Arc<Gate>>,
    pub(crate) jwts: Arc<Vec<AppJwt>>,
    /// Metric handles per route (by route index), and for unrouted requests.
    pub(crate) route_metrics: Vec<RouteMetrics>,
    pub(crate) unrouted_metrics: RouteMetrics,
    /// Metric handles per room (by room index).
    pub(crate) room_metrics: Vec<RoomMetrics>,
}

/// A request slot, counted here or across instances.
#[expect(dead_code, reason = "held only for its Drop, which returns the slot")]
enum Held {
    Local(Permit),
    Shared(SharedPermit),
}

/// Per-request state, dropped when the request ends (which returns its slot).
pub struct Ctx {
    _in_flight: InFlight,
    started: Instant,
    route: Option<usize>,
    permit: Option<Held>,
    slot_wait: Option<Duration>,
    visit: Option<Box<Visit>>,
    bypassed: bool,
    secure: bool,
    ip: Option<IpAddr>,
    upstream_sent: Option<Instant>,
    upstream_response: Option<(u16, Duration)>,
    outcome: Outcome,
}

/// How a request ended, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Proxied,
    Api,
    NoRoute,
    QueueRequired,
    Closed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Proxied => "proxied",
            Outcome::Api => "api",
            Outcome::NoRoute => "no_route",
            Outcome::QueueRequired => "queue_required",
            Outcome::Closed => "closed",
        }
    }
}

/// The body of a 503 from a full `requests` room.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueueRequired<'a> {
    code: &'static str,
    room: &'a str,
    retry_after_ms: u64,
    message: &'static str,
}

impl Proxy {
    fn room_of_route(&self, route: usize) -> Option<&Room> {
        let room = self.router.get(route)?.room?;
        self.rooms.get(room)
    }

    fn upstream_of_route(&self, route: usize) -> Option<&Arc<Upstream>> {
        self.upstreams.get(self.router.get(route)?.upstream)
    }

    /// Takes a slot in a `requests` room, waiting in line up to the room's
    /// `max_wait`; the reply is the 503 to send when none came free.
    async fn take_slot(
        &self,
        room: &Room,
        metrics: &RoomMetrics,
        ctx: &mut Ctx,
    ) -> Result<(), Reply> {
        let name = room.name();
        let start = Instant::now();
        let wait = room.max_wait();
        let held = match room.kind() {
            Kind::Requests(slots) => match slots.try_acquire() {
                Some(p) => Ok(Held::Local(p)),
                None if wait.is_zero() => Err(NoSlot::Full),
                None => {
                    metrics.queued.inc();
                    slots
                        .acquire(wait)
                        .await
                        .map(Held::Local)
                        .map_err(|_| NoSlot::Full)
                }
            },
            Kind::SharedRequests(slots) => slots.acquire(wait).await.map(Held::Shared),
            Kind::Sessions(_) => return Ok(()),
        };
        let waited = start.elapsed();
        metrics.slot_wait.observe(waited.as_secs_f64());
        ctx.slot_wait = Some(waited);
        let retry = match room.kind() {
            Kind::Requests(slots) => slots.retry_after(),
            Kind::SharedRequests(slots) => slots.retry_after(),
            Kind::Sessions(_) => Duration::from_secs(1),
        };
        match held {
            Ok(held) => {
                metrics.admitted.inc();
                ctx.permit = Some(held);
                Ok(())
            }
            Err(NoSlot::Store(e)) if room.on_store_error() == OnStoreError::Open => {
                tracing::warn!(room = name, error = %e, "store unavailable; letting the request through (on_store_error = open)");
                metrics.store_open.inc();
                Ok(())
            }
            Err(reason) => {
                match reason {
                    NoSlot::Full => metrics.rejected_full.inc(),
                    NoSlot::Store(_) => metrics.rejected_store.inc(),
                }
                Err(queue_required(name, retry))
            }
        }
    }

    /// Admission for a guarded route; `Some(reply)` when anteroom answers itself.
    async fn admit(
        &self,
        route: usize,
        session: &Session,
        ctx: &mut Ctx,
    ) -> Option<(Reply, Outcome)> {
        let room_index = self.router.get(route)?.room?;
        let room = self.rooms.get(room_index)?;
        let req = session.req_header();
        let visitor = Visitor { req, ip: ctx.ip };
        let facts = bypass::Visitor {
            path: req.uri.path(),
            ip: ctx.ip,
            req,
        };
        let route_rules = self.router.get(route).map(|r| &r.bypass);
        let bypassed = route_rules.is_some_and(|rules| bypass::matches(rules, &facts, &self.jwts))
            || bypass::matches(room.bypass(), &facts, &self.jwts);
        if bypassed {
            ctx.bypassed = true;
            return None;
        }
        match room.kind() {
            Kind::Requests(_) | Kind::SharedRequests(_) => self
                .take_slot(room, self.room_metrics.get(room_index)?, ctx)
                .await
                .err()
                .map(|reply| (reply, Outcome::QueueRequired)),
            Kind::Sessions(w) => {
                let gate = self.gate.as_ref()?;
                let jar = CookieJar::new(w, ctx.secure);
                match gate.decide(room, w, &visitor).await {
                    Decision::Admit(visit) => {
                        ctx.visit = Some(visit);
                        None
                    }
                    Decision::Wait(waiting) => Some((
                        api::waiting(room, w, gate, &waiting, req, &jar),
                        Outcome::QueueRequired,
                    )),
                    Decision::Full => {
                        Some((api::closed(room, w, PageState::Full, req), Outcome::Closed))
                    }
                    Decision::Maintenance => Some((
                        api::closed(room, w, PageState::Maintenance, req),
                        Outcome::Closed,
                    )),
                    Decision::Unavailable => Some((
                        api::closed(room, w, PageState::Unavailable, req),
                        Outcome::QueueRequired,
                    )),
                    Decision::Open => {
                        ctx.bypassed = true;
                        None
                    }
                }
            }
        }
    }
}

/// 503 with `Retry-After` (whole seconds, at least 1) and the JSON contract.
fn queue_required(room: &str, retry: Duration) -> Reply {
    let retry_ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX);
    Reply::json(
        503,
        &QueueRequired {
            code: "QUEUE_REQUIRED",
            room,
            retry_after_ms: retry_ms,
            message: "The room is at capacity. Retry after the given time.",
        },
    )
    .header(RETRY_AFTER, retry_ms.div_ceil(1000).max(1).to_string())
}

/// A client address as a header value; IPv4 is written without the
/// formatting machinery, as it is on every forwarded request.
fn ip_header(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::try_from(ip.to_string()).unwrap_or(HeaderValue::from_static("-"));
    };
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    HeaderValue::from_bytes(&buf[..n]).unwrap_or(HeaderValue::from_static("-"))
}

/// The request's host: the `Host` header, or the authority of an absolute URI.
pub(crate) fn request_host(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            _in_flight: self.lifecycle.enter(),
            started: Instant::now(),
            route: None,
            permit: None,
            slot_wait: None,
            visit: None,
            bypassed: false,
            secure: false,
            ip: None,
            upstream_sent: None,
            upstream_response: None,
            outcome: Outcome::Proxied,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        let peer = peer_ip(session);
        let tls = is_tls(session);
        let req = session.req_header();
        ctx.ip = client::ip(&self.server, peer, req);
        ctx.secure = client::is_secure(&self.server, peer, tls, req);
        let path = req.uri.path();
        if path.starts_with(api::PREFIX) || path == api::JWKS_PATH && self.gate.is_some() {
            ctx.outcome = Outcome::Api;
            let reply = api::handle(self, req, ctx.secure).await;
            reply.send(session).await?;
            return Ok(true);
        }
        let Some(route) = self.router.find(request_host(req), path) else {
            ctx.outcome = Outcome::NoRoute;
            Reply::error(404, "NO_ROUTE", "No route matches this host and path.")
                .send(session)
                .await?;
            return Ok(true);
        };
        ctx.route = Some(route);
        if let Some((reply, outcome)) = self.admit(route, session, ctx).await {
            ctx.outcome = outcome;
            reply.send(session).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let upstream = ctx
            .route
            .and_then(|r| self.upstream_of_route(r))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no upstream"))?;
        Ok(upstream.peer())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let reserved: Vec<_> = upstream_request
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with(RESERVED_HEADER_PREFIX))
            .cloned()
            .collect();
        for name in reserved {
            upstream_request.remove_header(&name);
        }
        let rewritten_host = ctx
            .route
            .and_then(|r| self.upstream_of_route(r))
            .and_then(|u| u.host_header());
        if let Some(host) = rewritten_host {
            // The client's Host is replaced: keep it where the app can see it.
            if let Some(original) = session.req_header().headers.get(HOST).cloned() {
                upstream_request.insert_header("x-forwarded-host", original)?;
            }
            upstream_request.insert_header(HOST, host)?;
        }
        if let Some(ip) = peer_ip(session) {
            let forwarded_for = match upstream_request.headers.get("x-forwarded-for") {
                Some(prior) => HeaderValue::try_from(format!(
                    "{}, {ip}",
                    String::from_utf8_lossy(prior.as_bytes())
                )),
                None => Ok(ip_header(ip)),
            };
            if let Ok(value) = forwarded_for {
                upstream_request.insert_header("x-forwarded-for", value)?;
            }
        }
        let proto = if ctx.secure { "https" } else { "http" };
        upstream_request.insert_header("x-forwarded-proto", proto)?;
        if let Some(visit) = &ctx.visit {
            if let Some(utm) = &visit.session.utm {
                for (name, value) in utm.headers() {
                    upstream_request.insert_header(name, value)?;
                }
            }
            upstream_request.insert_header(
                "x-anteroom-wait-ms",
                HeaderValue::from(visit.session.wait_ms),
            )?;
            upstream_request.insert_header("x-anteroom-pass", visit.pass.clone())?;
            if visit.source == Some(PassSource::Authorization) {
                upstream_request.remove_header(&AUTHORIZATION);
            }
        }
        // The upstream's time starts when the request is on its way.
        ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if !upstream_response.status.is_informational() {
            let latency = ctx.upstream_sent.map(|t| t.elapsed()).unwrap_or_default();
            ctx.upstream_response = Some((upstream_response.status.as_u16(), latency));
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        // Only an upstream response can carry the command; it never reaches the client.
        let release = upstream_response
            .remove_header(COMMAND_HEADER)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"release"));
        let (Some(visit), Some(route), Some(gate)) = (&ctx.visit, ctx.route, &self.gate) else {
            return Ok(());
        };
        let Some(room) = self.room_of_route(route) else {
            return Ok(());
        };
        let Kind::Sessions(w) = room.kind() else {
            return Ok(());
        };
        let jar = CookieJar::new(w, ctx.secure);
        if release {
            gate.release(room.name(), visit.session.id, &visit.pass, "command")
                .await;
            upstream_response.append_header(SET_COOKIE, jar.clear(PASS_COOKIE))?;
        } else if visit.set_pass {
            upstream_response.append_header(SET_COOKIE, jar.pass(w, &visit.pass))?;
        }
        if visit.clear_ticket {
            upstream_response.append_header(SET_COOKIE, jar.clear(TICKET_COOKIE))?;
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        let reply = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(code)) => {
                Some(Reply::error(*code, "ERROR", "The request failed."))
            }
            (
                ErrorSource::Upstream,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ) => Some(Reply::error(
                504,
                "UPSTREAM_TIMEOUT",
                "The upstream did not answer in time.",
            )),
            (ErrorSource::Upstream, _) => Some(Reply::error(
                502,
                "UPSTREAM_ERROR",
                "The upstream failed to answer.",
            )),
            (
                ErrorSource::Downstream,
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
            ) => None,
            (ErrorSource::Downstream, _) => Some(Reply::error(
                400,
                "BAD_REQUEST",
                "The request could not be read.",
            )),
            _ => Some(Reply::error(
                500,
                "INTERNAL",
                "anteroom failed to handle the request.",
            )),
        };
        let mut code = 0;
        // Once the upstream's header went out, a status can no longer be sent.
        if let Some(reply) = reply.filter(|_| session.response_written().is_none()) {
            code = reply.status();
            if let Err(write_error) = reply.send(session).await {
                tracing::debug!(error = %write_error, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, _error: &Error) -> bool {
        // The access line below carries the error.
        true
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Ctx) {
        // The request is over: its slot goes back now, whatever happened.
        drop(ctx.permit.take());

        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route = ctx.route.and_then(|r| self.router.get(r));
        let route_name = route.map_or("-", |r| r.name.as_str());
        let upstream = ctx.route.and_then(|r| self.upstream_of_route(r));
        let upstream_name = upstream.map_or("-", |u| u.config.name.as_str());
        let room = ctx.route.and_then(|r| self.room_of_route(r));
        let room_name = room.map_or("-", |r| r.name());
        let duration = ctx.started.elapsed();

        let metrics = ctx
            .route
            .and_then(|r| self.route_metrics.get(r))
            .unwrap_or(&self.unrouted_metrics);
        metrics.request(status).inc();
        metrics.duration.observe(duration.as_secs_f64());
        if let Some((upstream_status, latency)) = ctx.upstream_response {
            metrics.upstream_response(upstream_status).inc();
            metrics.latency.observe(latency.as_secs_f64());
        }

        let req = session.req_header();
        let utm = ctx.visit.as_ref().and_then(|v| v.session.utm.as_deref());
        let (utm_source, utm_campaign) = match &self.gate {
            Some(gate) => gate.labels().of(utm),
            None => ("none", "none"),
        };
        if let (Some(visit), Some(room)) = (&ctx.visit, room) {
            let converted = match room.kind() {
                Kind::Sessions(w) => w.config.conversion.as_ref().is_some_and(|c| {
                    req.method == c.method
                        && req.uri.path().starts_with(&c.path_prefix)
                        && (200..300).contains(&status)
                }),
                Kind::Requests(_) | Kind::SharedRequests(_) => false,
            };
            if converted {
                self.metrics
                    .conversions
                    .with_label_values(&[room.name(), utm_source, utm_campaign])
                    .inc();
                tracing::info!(
                    target: "anteroom::visitor",
                    event = "converted",
                    room = room.name(),
                    session = %visit.session.id,
                    wait_ms = visit.session.wait_ms,
                    utm_source = utm.and_then(|u| u.source.as_deref()),
                    utm_medium = utm.and_then(|u| u.medium.as_deref()),
                    utm_campaign = utm.and_then(|u| u.campaign.as_deref()),
                );
            }
        }
        tracing::info!(
            target: "anteroom::access",
            method = %req.method,
            path = req.uri.path(),
            host = request_host(req).unwrap_or("-"),
            route = route_name,
            room = room_name,
            upstream = upstream_name,
            status,
            outcome = ctx.outcome.as_str(),
            bypassed = ctx.bypassed,
            duration_ms = duration.as_secs_f64() * 1000.0,
            slot_wait_ms = ctx.slot_wait.map(|w| w.as_secs_f64() * 1000.0),
            wait_ms = ctx.visit.as_ref().map(|v| v.session.wait_ms),
            session = ctx.visit.as_ref().map(|v| v.session.id.to_string()),
            utm_source = utm.and_then(|u| u.source.as_deref()),
            utm_medium = utm.and_then(|u| u.medium.as_deref()),
            utm_campaign = utm.and_then(|u| u.campaign.as_deref()),
            client = ctx.ip.map(|ip| ip.to_string()),
            error = error.map(|e| e.to_string()),
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::ip_header;

    #[test]
    fn client_addresses_as_header_values() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.0.100",
            "::1",
            "2001:db8::7",
        ] {
            assert_eq!(ip_header(ip.parse().unwrap()), ip);
        }
    }
}
