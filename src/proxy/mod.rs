//! The Pingora glue. For each request it reads the facts once, lets the
//! decisions decide (`route`, `bypass`, `requests` for a `requests` room,
//! `gate` for a `sessions` room, `api` for anteroom's own paths), writes the
//! reply they chose (`replies`) or forwards the request (`forward`), and
//! records how it ended (`traffic`, the access log). It decides nothing.

pub mod answers;
pub mod api;
pub mod connections;
pub mod forward;
pub mod guard;
pub mod site;
pub mod sse;
pub mod traffic;
pub mod upstream;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::HeaderValue;
use http::header::STRICT_TRANSPORT_SECURITY;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};

use crate::attribution;
use crate::lifecycle::{self, Lifecycle};
use crate::proxy::api::Api;
use crate::proxy::forward::Forwarding;
use crate::proxy::guard::Guard;
use crate::proxy::site::{Current, Site};
use crate::proxy::sse::Streams;
use crate::proxy::traffic::{Access, Outcome, RouteMetrics};
use crate::request::facts::Facts;
use crate::response::Reply;
use crate::room::Room;

/// Everything the request path needs, shared by all worker threads.
pub struct Proxy {
    /// The config in force; each request takes it once, at its start.
    pub(crate) site: Arc<Current>,
    pub(crate) lifecycle: Arc<Lifecycle>,
    /// Metric handles for requests anteroom answers itself, and for those
    /// no route took.
    pub(crate) own_metrics: RouteMetrics,
    pub(crate) unrouted_metrics: RouteMetrics,
    pub(crate) streams: Streams,
}

/// Per-request state, dropped when the request ends (which returns its
/// slot). What belongs to the room's kind is in `guard`.
pub struct Ctx {
    _in_flight: lifecycle::InFlight,
    /// The config this request is decided and forwarded by, start to end.
    site: Arc<Site>,
    started: Instant,
    /// The route that took the request.
    route: Option<usize>,
    /// What the request holds of the route's room.
    guard: Guard,
    /// It passed its room without taking a place.
    bypassed: bool,
    /// The client anteroom decided on.
    ip: Option<IpAddr>,
    /// How the request is forwarded, as its facts decided.
    forwarding: Forwarding,
    /// The canonical target, when it is not what the client sent.
    target: Option<String>,
    /// The TLS listener's `Strict-Transport-Security`, for every answer.
    hsts: Option<HeaderValue>,
    /// The request's id, and whether anteroom made it (then it is sent
    /// upstream); made when it is first needed, by forwarding or the access line.
    request_id: Option<(String, bool)>,
    upstream_sent: Option<Instant>,
    upstream_response: Option<(u16, Duration)>,
    outcome: Outcome,
}

impl Ctx {
    /// The request's id, made once: the client's well-formed one, or new.
    fn request_id(&mut self, req: &RequestHeader) -> (&str, bool) {
        let header = self.site.config.server.request_id.as_ref();
        let (id, made) = self
            .request_id
            .get_or_insert_with(|| forward::request_id(header, req));
        (id.as_str(), *made)
    }
}

/// anteroom's own answer to a request, or `None` to forward it.
async fn answer(site: &Site, facts: &Facts<'_>, ctx: &mut Ctx) -> Option<Reply> {
    if let Some(port) = site.config.server.redirect_https.filter(|_| !facts.secure) {
        ctx.outcome = Outcome::Api;
        return Some(answers::to_https(facts, port));
    }
    if api::serves(&facts.path, site.gate.is_some()) {
        ctx.outcome = Outcome::Api;
        let api = Api {
            rooms: &site.rooms,
            gate: site.gate.as_deref(),
        };
        return Some(api.handle(facts).await);
    }
    let Some(index) = site.router.find(facts.host_name(), &facts.path) else {
        ctx.outcome = Outcome::NoRoute;
        return Some(Reply::error(
            404,
            "NO_ROUTE",
            "No route matches this host and path.",
        ));
    };
    ctx.route = Some(index);
    let route = site.router.get(index)?;
    // The route's room, found once: the request holds it from here on.
    let room = site.rooms.shared(route.room?)?;
    let entry = guard::enter(site, route, room, facts, ctx.started).await;
    ctx.guard = entry.guard;
    ctx.bypassed = entry.bypassed;
    let (reply, outcome) = entry.answer?;
    ctx.outcome = outcome;
    Some(reply)
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

/// The listener address the connection arrived at.
fn local_addr(session: &Session) -> Option<std::net::SocketAddr> {
    let socket = session.digest()?.socket_digest.as_ref()?;
    socket.local_addr()?.as_inet().copied()
}

/// The reply with the listener's `Strict-Transport-Security`, if it sends one.
fn with_hsts(reply: Reply, ctx: &Ctx) -> Reply {
    match &ctx.hsts {
        Some(hsts) => reply.header_value(STRICT_TRANSPORT_SECURITY, hsts.clone()),
        None => reply,
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            _in_flight: self.lifecycle.enter(),
            site: self.site.load(),
            started: Instant::now(),
            route: None,
            guard: Guard::Unguarded,
            bypassed: false,
            ip: None,
            forwarding: Forwarding::default(),
            target: None,
            hsts: None,
            request_id: None,
            upstream_sent: None,
            upstream_response: None,
            outcome: Outcome::Proxied,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        // The header is in: from here the body's pace is timed (the idle
        // time after the response is the connection clock's).
        connections::request_read();
        let s = &ctx.site.config.server;
        session.set_read_timeout(Some(s.body_timeout));
        session.set_total_drain_timeout(Some(s.body_timeout));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        let (peer, tls) = (peer_ip(session), is_tls(session));
        let site = Arc::clone(&ctx.site);
        ctx.hsts = tls
            .then(|| local_addr(session))
            .flatten()
            .and_then(|local| site.hsts(local))
            .cloned();
        let reply = match Facts::new(&site.config.server, session.req_header(), peer, tls) {
            Ok(facts)
                if sse::asks(&facts.path)
                    && site.config.server.redirect_https.is_none_or(|_| tls) =>
            {
                ctx.outcome = Outcome::Api;
                ctx.ip = facts.ip;
                drop(facts);
                sse::serve(session, &site, &self.lifecycle, &self.streams, peer, tls).await?;
                return Ok(true);
            }
            Ok(mut facts) => {
                if facts.ip.is_none() || !facts.forwarded_for.is_empty() {
                    site.clients.forwarded(facts.ip.is_some());
                }
                facts.attribution_consent =
                    attribution::consents(&site.config.attribution, facts.req);
                ctx.ip = facts.ip;
                ctx.forwarding = Forwarding::of(&facts);
                if facts.rewritten {
                    ctx.target = Some(facts.target().into_owned());
                }
                answer(&site, &facts, ctx).await
            }
            Err(refusal) => {
                ctx.outcome = Outcome::Refused;
                ctx.ip = peer;
                Some(Reply::error(400, "BAD_REQUEST", refusal.to_string()))
            }
        };
        match reply {
            Some(reply) => {
                with_hsts(reply, ctx).send(session).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        if let Some(in_flight) = ctx.guard.in_flight() {
            // An upstream 429 held: sent again after its hint, with a slot
            // taken again in turn.
            in_flight.before_sending().await?;
        }
        let upstream = ctx
            .route
            .and_then(|r| ctx.site.upstream_of_route(r))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no upstream"))?;
        Ok(upstream.peer())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let made = ctx.request_id(upstream_request).1;
        let upstream = ctx.route.and_then(|r| ctx.site.upstream_of_route(r));
        let request_id = match (&ctx.site.config.server.request_id, &ctx.request_id) {
            (Some(header), Some((id, true))) if made => Some((header, id.as_str())),
            _ => None,
        };
        ctx.forwarding.apply(
            upstream_request,
            upstream.and_then(|u| u.host_header()),
            ctx.guard.visit(),
            request_id,
        )?;
        // The upstream's time starts when the request is on its way.
        ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if upstream_response.status.is_informational() {
            return Ok(());
        }
        let status = upstream_response.status.as_u16();
        let latency = ctx.upstream_sent.map(|t| t.elapsed()).unwrap_or_default();
        ctx.upstream_response = Some((status, latency));
        let sent = ctx.upstream_sent.unwrap_or_else(Instant::now);
        let (Some(in_flight), Some(route)) = (
            ctx.guard.in_flight(),
            ctx.route.and_then(|r| ctx.site.router.get(r)),
        ) else {
            return Ok(());
        };
        let replayable = !session.as_ref().retry_buffer_truncated();
        in_flight.answered(route, replayable, upstream_response, sent)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if ctx.guard.retrying() && matches!(e.etype(), ErrorType::HTTPStatus(429)) {
            // A 429 held for `retry_429`: the upstream did not process the
            // request, so it is sent again whatever its method.
            return e;
        }
        // Pingora's own policy for everything else.
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        if let Some(hsts) = &ctx.hsts {
            upstream_response.insert_header(STRICT_TRANSPORT_SECURITY, hsts.clone())?;
        }
        let gate = ctx.site.gate.as_deref();
        ctx.guard
            .respond(gate, upstream_response, ctx.forwarding.secure())
            .await
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<Option<Duration>> {
        ctx.guard.body(body.as_ref(), end_of_stream);
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        // A held 429 that could not be sent again in time: the room's own
        // answer, never the upstream's bare 429.
        let requeued = ctx.guard.in_flight().and_then(|r| r.requeued(e));
        if requeued.is_some() {
            ctx.outcome = Outcome::QueueRequired;
        }
        let reply = requeued.or_else(|| answers::failed(e));
        let mut code = 0;
        // Once the upstream's header went out, a status can no longer be sent.
        if let Some(reply) = reply.filter(|_| session.response_written().is_none()) {
            code = reply.status();
            if let Err(write_error) = with_hsts(reply, ctx).send(session).await {
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
        connections::response_done();
        if error.is_some_and(|e| {
            e.esource() == &ErrorSource::Downstream
                && matches!(
                    e.etype(),
                    ErrorType::ConnectionClosed
                        | ErrorType::ReadError
                        | ErrorType::WriteError
                        | ErrorType::ReadTimedout
                        | ErrorType::WriteTimedout
                )
        }) {
            crate::logging::routine().client_disconnects.inc();
        }
        let access = tracing::enabled!(target: "anteroom::access", tracing::Level::INFO);
        if access {
            ctx.request_id(session.req_header());
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let site = &ctx.site;
        let req = session.req_header();
        let path = ctx.target.as_deref().map_or_else(
            || req.uri.path(),
            |t| t.split_once('?').map_or(t, |(p, _)| p),
        );
        // The request is over: its slot goes back now, whatever happened.
        let gate = site.gate.as_deref();
        ctx.guard
            .end(gate, ctx.outcome, &req.method, path, status)
            .await;

        let duration = ctx.started.elapsed();
        let metrics = ctx.route.and_then(|r| site.route_metrics.get(r)).unwrap_or(
            if ctx.outcome == Outcome::Api {
                &self.own_metrics
            } else {
                &self.unrouted_metrics
            },
        );
        metrics.request(status).inc();
        metrics.duration.observe(duration.as_secs_f64());
        if let Some((upstream_status, latency)) = ctx.upstream_response {
            metrics.upstream_response(upstream_status).inc();
            metrics.latency.observe(latency.as_secs_f64());
        }

        if !access {
            return;
        }
        let route = ctx.route.and_then(|r| site.router.get(r));
        Access {
            req,
            path,
            request_id: ctx.request_id.as_ref().map(|(id, _)| id.as_str()),
            bytes: (session.body_bytes_read(), session.body_bytes_sent()),
            route: route.map_or("-", |r| r.name.as_str()),
            // The route's room, also when the request never entered it.
            room: route
                .and_then(|r| site.rooms.get(r.room?))
                .map_or("-", Room::name),
            upstream: ctx
                .route
                .and_then(|r| site.upstream_of_route(r))
                .map_or("-", |u| u.config.name.as_str()),
            status,
            outcome: ctx.outcome,
            bypassed: ctx.bypassed,
            duration,
            slot_wait: ctx.guard.slot_wait(),
            visit: ctx.guard.visit(),
            client: ctx.ip,
            error,
        }
        .log();
    }
}
