//! The Pingora glue. For each request it reads the facts once, lets the
//! decisions decide (`route`, `bypass`, `requests` for a `requests` room,
//! `gate` for a `sessions` room, `api` for anteroom's own paths), writes the
//! reply they chose (`replies`) or forwards the request (`forward`), and
//! records how it ended (`traffic`, the access log). It decides nothing.

pub mod api;
pub mod connections;
pub mod event_stream;
pub mod forward;
pub mod replies;
pub mod site;
pub mod traffic;
pub mod upstream;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::HeaderValue;
use http::header::{LINK, SET_COOKIE, STRICT_TRANSPORT_SECURITY};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};

use crate::attribution;
use crate::bypass;
use crate::gate::{Decision, Visit};
use crate::lifecycle::{InFlight, Lifecycle};
use crate::limits::adaptive::BodyHint;
use crate::limits::fair::Turn;
use crate::limits::slots::Held;
use crate::limits::usage::Usage;
use crate::page::PageState;
use crate::proxy::api::Api;
use crate::proxy::event_stream::Streams;
use crate::proxy::forward::Forwarding;
use crate::proxy::replies::CookieJar;
use crate::proxy::site::{Current, Site};
use crate::proxy::traffic::RouteMetrics;
use crate::request::facts::{self, Facts};
use crate::requests::{self, Admission};
use crate::respond::Reply;
use crate::room::Kind;

/// The response header through which the app ends a visitor's session.
const COMMAND_HEADER: &str = "anteroom-command";

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

/// Per-request state, dropped when the request ends (which returns its slot).
pub struct Ctx {
    _in_flight: InFlight,
    /// The config this request is decided and forwarded by, start to end.
    site: Arc<Site>,
    started: Instant,
    route: Option<usize>,
    slot: Option<Held>,
    slot_wait: Option<Duration>,
    visit: Option<Box<Visit>>,
    bypassed: bool,
    /// The client anteroom decided on.
    ip: Option<IpAddr>,
    /// How the request is forwarded, as its facts decided.
    forwarding: Forwarding,
    /// The canonical target, when it is not what the client sent.
    target: Option<String>,
    /// A browser let in on arrival: its answer asks it to confirm its place.
    confirm: bool,
    /// For a room with a token budget: what was reserved, and the usage its
    /// response reports as it streams by.
    tokens: Option<(u32, Usage)>,
    /// A `requests` room's request: when its `max_wait` ends, and its turn
    /// in the room's line.
    deadline: Option<Instant>,
    turn: Turn,
    /// An upstream `429` being retried: when to send again, and how often
    /// it was sent again already.
    retry_at: Option<Instant>,
    retries: u32,
    /// The request could not be sent again in time: `503 QUEUE_REQUIRED`
    /// with this retry time instead of the upstream's `429`.
    requeue: Option<Duration>,
    /// A `429` of an adaptive room whose hint is in its body.
    body_hint: Option<BodyHint>,
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

/// How a request ended, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Proxied,
    Api,
    Refused,
    NoRoute,
    QueueRequired,
    Closed,
    Limited,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Proxied => "proxied",
            Outcome::Api => "api",
            Outcome::Refused => "refused",
            Outcome::NoRoute => "no_route",
            Outcome::QueueRequired => "queue_required",
            Outcome::Closed => "closed",
            Outcome::Limited => "limited",
        }
    }
}

/// anteroom's own answer to a request, or `None` to forward it.
async fn answer(site: &Site, facts: &Facts<'_>, ctx: &mut Ctx) -> Option<Reply> {
    if let Some(port) = site.config.server.redirect_https.filter(|_| !facts.secure) {
        ctx.outcome = Outcome::Api;
        return Some(replies::to_https(facts, port));
    }
    if api::serves(&facts.path, site.gate.is_some()) {
        ctx.outcome = Outcome::Api;
        let api = Api {
            rooms: &site.rooms,
            gate: site.gate.as_deref(),
        };
        return Some(api.handle(facts).await);
    }
    let Some(route) = site.router.find(facts.host_name(), &facts.path) else {
        ctx.outcome = Outcome::NoRoute;
        return Some(Reply::error(
            404,
            "NO_ROUTE",
            "No route matches this host and path.",
        ));
    };
    ctx.route = Some(route);
    let (reply, outcome) = admit(site, route, facts, ctx).await?;
    ctx.outcome = outcome;
    Some(reply)
}

/// The room's decision on a guarded route; `Some` when anteroom answers.
async fn admit(
    site: &Site,
    route: usize,
    facts: &Facts<'_>,
    ctx: &mut Ctx,
) -> Option<(Reply, Outcome)> {
    let rules = &site.router.get(route)?.bypass;
    let room = site.room_of_route(route)?;
    if bypass::matches(rules, facts, &site.jwts)
        || bypass::matches(room.bypass(), facts, &site.jwts)
    {
        ctx.bypassed = true;
        return None;
    }
    match room.kind() {
        Kind::Requests(slots) => {
            let turn = requests::turn(room.fairness(), facts, &site.jwts, || {
                site.gate.as_ref()?.pass_session(facts)
            });
            ctx.turn = turn;
            let decided = requests::admit(room, slots, turn).await;
            ctx.slot_wait = Some(decided.waited);
            ctx.tokens = decided.charged.map(|c| (c, Usage::new(room.usage_keys())));
            ctx.deadline = Some(ctx.started + room.max_wait());
            match decided.admission {
                Admission::Admitted(slot) => {
                    ctx.slot = Some(slot);
                    None
                }
                Admission::Open => None,
                Admission::Refused(retry) => Some((
                    replies::queue_required(room.name(), retry),
                    Outcome::QueueRequired,
                )),
            }
        }
        Kind::Sessions(w) => {
            let gate = site.gate.as_ref()?;
            let closed = |state| replies::closed(room, w, state, facts);
            let counters = room.counters();
            match gate.decide(room, w, facts).await {
                Decision::Admit(visit) => {
                    counters.admitted.inc();
                    // The pass cookie reaches the confirm endpoint only from the root.
                    ctx.confirm =
                        visit.on_arrival() && facts.wants_html() && w.config.cookie_path == "/";
                    ctx.visit = Some(visit);
                    None
                }
                Decision::Wait(waiting) => {
                    counters.queued.inc();
                    let jar = CookieJar::new(w, gate.ticket_ttl(), facts.secure);
                    let back = facts.target();
                    let reply = replies::waiting(room, w, &waiting, facts, &jar, &back);
                    Some((reply, Outcome::QueueRequired))
                }
                Decision::Full => {
                    counters.rejected_queue_full.inc();
                    Some((closed(PageState::Full), Outcome::Closed))
                }
                Decision::Limited(limited) => {
                    Some((replies::limited(room, w, &limited, facts), Outcome::Limited))
                }
                Decision::BadRequest(message) => {
                    Some((Reply::error(400, "BAD_REQUEST", message), Outcome::Refused))
                }
                Decision::UnknownClient => Some((
                    Reply::error(
                        403,
                        "UNKNOWN_CLIENT",
                        "The proxy in front named no client address; this room admits only known clients.",
                    ),
                    Outcome::Refused,
                )),
                Decision::Maintenance => {
                    counters.rejected_closed.inc();
                    Some((closed(PageState::Maintenance), Outcome::Closed))
                }
                Decision::Unavailable => {
                    // Counted by the gate, which logs why.
                    Some((closed(PageState::Unavailable), Outcome::QueueRequired))
                }
                Decision::Open => {
                    ctx.bypassed = true;
                    None
                }
            }
        }
    }
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
            slot: None,
            slot_wait: None,
            visit: None,
            bypassed: false,
            ip: None,
            forwarding: Forwarding::default(),
            target: None,
            confirm: false,
            request_id: None,
            tokens: None,
            deadline: None,
            turn: Turn::ANYONE,
            retry_at: None,
            retries: 0,
            requeue: None,
            body_hint: None,
            hsts: None,
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
                if event_stream::asks(&facts.path)
                    && site.config.server.redirect_https.is_none_or(|_| tls) =>
            {
                ctx.outcome = Outcome::Api;
                ctx.ip = facts.ip;
                drop(facts);
                event_stream::serve(session, &site, &self.lifecycle, &self.streams, peer, tls)
                    .await?;
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
        if let Some(at) = ctx.retry_at.take() {
            // An upstream 429 held: sent again after its hint, with a slot
            // taken again in turn.
            tokio::time::sleep_until(at.into()).await;
            let left = ctx.deadline.map_or(Duration::ZERO, |d| {
                d.saturating_duration_since(Instant::now())
            });
            let site = Arc::clone(&ctx.site);
            if let Some((room, slots)) = ctx.route.and_then(|r| site.request_room_of_route(r)) {
                match requests::readmit(room, slots, ctx.turn, left).await {
                    Ok(held) => ctx.slot = Some(held),
                    Err(retry) => {
                        ctx.requeue = Some(retry);
                        return Err(Error::explain(
                            ErrorType::HTTPStatus(503),
                            "no slot for a retry within max_wait",
                        ));
                    }
                }
            }
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
            ctx.visit.as_deref(),
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
        if ctx
            .route
            .and_then(|r| ctx.site.request_room_of_route(r))
            .is_none()
        {
            return Ok(());
        }
        let site = Arc::clone(&ctx.site);
        let Some((route, (room, slots))) = ctx
            .route
            .and_then(|r| Some((site.router.get(r)?, site.request_room_of_route(r)?)))
        else {
            return Ok(());
        };
        let now = Instant::now();
        let retries = requests::Retries {
            allowed: route.retry_429
                && ctx.slot.is_some()
                && !session.as_ref().retry_buffer_truncated(),
            done: ctx.retries,
            left: ctx
                .deadline
                .map_or(Duration::ZERO, |d| d.saturating_duration_since(now)),
        };
        let sent = ctx.upstream_sent.unwrap_or(now);
        match requests::answered(
            room,
            slots,
            status,
            &upstream_response.headers,
            sent,
            retries,
        ) {
            requests::Answer::Retry(delay) => {
                // Its slot goes to the next in line meanwhile.
                ctx.slot = None;
                ctx.retry_at = Some(now + delay);
                ctx.requeue = Some(delay);
                ctx.retries += 1;
                let mut e = Error::explain(
                    ErrorType::HTTPStatus(429),
                    "the upstream answered 429; the request is sent again",
                );
                e.set_retry(true);
                Err(e)
            }
            requests::Answer::Requeue(retry) => {
                ctx.requeue = Some(retry);
                let mut e = Error::explain(
                    ErrorType::HTTPStatus(429),
                    "the upstream answered 429 with a hint past max_wait",
                );
                e.set_retry(false);
                Err(e)
            }
            requests::Answer::PassReadingHint => {
                ctx.body_hint = Some(BodyHint::default());
                Ok(())
            }
            requests::Answer::Pass => Ok(()),
        }
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
        if ctx.retry_at.is_some() && matches!(e.etype(), ErrorType::HTTPStatus(429)) {
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
        // Only an upstream response can carry the command; it never reaches the client.
        let release = upstream_response
            .remove_header(COMMAND_HEADER)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"release"));
        let (Some(visit), Some(gate)) = (&ctx.visit, &ctx.site.gate) else {
            return Ok(());
        };
        let Some((room, w)) = ctx.route.and_then(|r| ctx.site.waiting_room_of_route(r)) else {
            return Ok(());
        };
        if release {
            gate.release(room.name(), visit.session.id, &visit.pass, "command")
                .await;
        }
        let jar = CookieJar::new(w, gate.ticket_ttl(), ctx.forwarding.secure());
        for cookie in jar.for_visit(visit, release) {
            upstream_response.append_header(SET_COOKIE, cookie)?;
        }
        if ctx.confirm && !release {
            // The browser fetches it at once, with the pass cookie just set:
            // its place is confirmed without waiting for its next click.
            upstream_response.append_header(LINK, replies::confirm_link(room))?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<Option<Duration>> {
        if let (Some((_, usage)), Some(chunk)) = (&mut ctx.tokens, body.as_ref()) {
            usage.feed(chunk);
        }
        if let Some(hint) = &mut ctx.body_hint {
            if let Some(chunk) = body.as_ref() {
                hint.feed(chunk);
            }
            if end_of_stream {
                let adaptive = ctx
                    .route
                    .and_then(|r| ctx.site.room_of_route(r))
                    .and_then(|room| room.adaptive());
                if let (Some(delay), Some(adaptive)) = (hint.delay(), adaptive) {
                    adaptive.pause(delay, Instant::now());
                }
                ctx.body_hint = None;
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        // A held 429 that could not be sent again in time: the room's own
        // answer, never the upstream's bare 429.
        let room = ctx.route.and_then(|r| ctx.site.room_of_route(r));
        let requeued = match (e.etype(), ctx.requeue, room) {
            (ErrorType::HTTPStatus(429 | 503), Some(retry), Some(room)) => {
                Some(replies::queue_required(room.name(), retry))
            }
            _ => None,
        };
        if requeued.is_some() {
            ctx.outcome = Outcome::QueueRequired;
        }
        let reply = requeued.or_else(|| match (e.esource(), e.etype()) {
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
        });
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
        // The request is over: its slot goes back now, whatever happened.
        drop(ctx.slot.take());
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

        if tracing::enabled!(target: "anteroom::access", tracing::Level::INFO) {
            ctx.request_id(session.req_header());
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let site = &ctx.site;
        if let (Some((reserved, usage)), Some(room)) =
            (&ctx.tokens, ctx.route.and_then(|r| site.room_of_route(r)))
        {
            // Once, whatever way the request ended: what the response
            // reported, or the estimate when it reported nothing.
            let used = if ctx.outcome == Outcome::QueueRequired {
                // A held 429 that ended as the room's 503: never processed.
                0
            } else {
                usage.total().unwrap_or(u64::from(*reserved))
            };
            if let Some(budget) = room.budget() {
                budget.settle(*reserved, used).await;
            }
            let class = usize::from(ctx.turn.weight > 1);
            room.counters().tokens[class].inc_by(used);
        }
        let route = ctx.route.and_then(|r| site.router.get(r));
        let upstream = ctx.route.and_then(|r| site.upstream_of_route(r));
        let room = ctx.route.and_then(|r| site.room_of_route(r));
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

        let req = session.req_header();
        let path = ctx.target.as_deref().map_or_else(
            || req.uri.path(),
            |t| t.split_once('?').map_or(t, |(p, _)| p),
        );
        if let (Some(visit), Some(gate)) = (&ctx.visit, &site.gate) {
            let waiting_room = ctx.route.and_then(|r| site.waiting_room_of_route(r));
            if let Some((room, w)) = waiting_room {
                if w.converts(&req.method, path, status) {
                    gate.events().converted(room.name(), &visit.session);
                }
            }
        }
        let request_id = ctx.request_id.as_ref().map(|(id, _)| id.as_str());
        let utm = ctx.visit.as_ref().and_then(|v| v.session.utm.as_deref());
        let user_agent = req
            .headers
            .get(http::header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        tracing::info!(
            target: "anteroom::access",
            method = %req.method,
            path,
            version = ?req.version,
            host = facts::host_header(req).unwrap_or("-"),
            request_id,
            user_agent = user_agent.as_deref(),
            bytes_in = session.body_bytes_read(),
            bytes_out = session.body_bytes_sent(),
            route = route.map_or("-", |r| r.name.as_str()),
            room = room.map_or("-", |r| r.name()),
            upstream = upstream.map_or("-", |u| u.config.name.as_str()),
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
