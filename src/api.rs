//! anteroom's own answers on the public listener: the endpoints under
//! [`PREFIX`] (never proxied), the JWKS, and what a visitor who cannot come
//! in is told (the waiting page for a browser, `503 QUEUE_REQUIRED` JSON for
//! everything else).

use http::header::{RETRY_AFTER, SET_COOKIE};
use pingora::http::RequestHeader;
use serde::Serialize;

use crate::client;
use crate::cookies;
use crate::gate::{Gate, PASS_COOKIE, Status, TICKET_COOKIE, Visit, Waiting};
use crate::page::{PageState, PageView};
use crate::proxy::Proxy;
use crate::respond::Reply;
use crate::room::{Kind, Room, WaitingRoom};

/// Paths anteroom reserves for itself on the public listener.
pub const PREFIX: &str = "/__anteroom/";
/// Where the public keys are published for apps that verify passes.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// The same keys under anteroom's own prefix.
const JWKS_ALIAS: &str = "/__anteroom/jwks.json";
/// How long a full or closed room asks clients to stay away.
const RETRY_CLOSED_SECS: u64 = 30;

/// `GET /__anteroom/capacity?room=NAME`.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Capacity<'a> {
    /// Room name.
    pub room: &'a str,
    /// Configured capacity.
    pub capacity: u32,
    /// Slots held now.
    pub in_use: u32,
    /// Slots free now.
    pub available: u32,
    /// Requests or visitors waiting in line.
    pub waiting: u32,
    /// The presenting visitor's place (with a ticket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// The presenting visitor's estimated wait (with a ticket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

impl<'a> Capacity<'a> {
    /// The room's capacity as last seen.
    pub fn of(room: &'a Room) -> Capacity<'a> {
        let usage = room.usage();
        Capacity {
            room: room.name(),
            capacity: usage.capacity,
            in_use: usage.in_use,
            available: usage.available(),
            waiting: usage.waiting,
            position: None,
            wait_ms: None,
        }
    }
}

/// `GET /__anteroom/status` and the body of `QUEUE_REQUIRED`.
#[derive(Debug, Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct StatusBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    state: &'static str,
    room: &'a str,
    room_state: &'static str,
    position: u32,
    ahead: u32,
    wait_ms: u64,
    wait_known: bool,
    poll_after_ms: u64,
    queue_length: u32,
    available: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect: Option<String>,
}

fn poll_ms(w: &WaitingRoom) -> u64 {
    u64::try_from(w.config.poll_interval.as_millis()).unwrap_or(u64::MAX)
}

fn queued_body<'a>(room: &'a Room, w: &WaitingRoom, wt: &'a Waiting) -> StatusBody<'a> {
    let p = &wt.place;
    StatusBody {
        state: "queued",
        room: room.name(),
        room_state: p.state.as_str(),
        position: p.position(),
        ahead: p.ahead,
        wait_ms: p.wait.ms,
        wait_known: p.wait.known,
        poll_after_ms: poll_ms(w),
        queue_length: p.queue_length,
        available: p.available,
        ticket: Some(&wt.ticket),
        ..StatusBody::default()
    }
}

/// Cookie settings of one sessions room for one request.
pub struct CookieJar<'a> {
    /// The room's cookie path.
    pub path: &'a str,
    /// Whether the client came over TLS.
    pub secure: bool,
}

impl<'a> CookieJar<'a> {
    /// The cookies of a room for a client that did (or did not) come over TLS.
    pub fn new(w: &'a WaitingRoom, secure: bool) -> CookieJar<'a> {
        CookieJar {
            path: &w.config.cookie_path,
            secure,
        }
    }

    /// `Set-Cookie` for a pass.
    pub fn pass(&self, w: &WaitingRoom, token: &http::HeaderValue) -> String {
        let token = token.to_str().unwrap_or_default();
        cookies::set(
            PASS_COOKIE,
            token,
            self.path,
            w.config.session_ttl.as_secs().max(1),
            self.secure,
        )
    }

    /// `Set-Cookie` for a ticket.
    pub fn ticket(&self, gate: &Gate, token: &str) -> String {
        cookies::set(
            TICKET_COOKIE,
            token,
            self.path,
            gate.ticket_ttl().as_secs().max(1),
            self.secure,
        )
    }

    /// `Set-Cookie` that deletes a cookie.
    pub fn clear(&self, name: &str) -> String {
        cookies::clear(name, self.path, self.secure)
    }
}

/// The request's path and query, percent-encoded for a `return=` parameter.
fn return_param(req: &RequestHeader) -> String {
    let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    form_urlencoded::byte_serialize(target.as_bytes()).collect()
}

/// A same-site path to send a visitor back to; anything else becomes `/`.
fn safe_return(value: Option<&str>) -> String {
    match value {
        Some(v) if v.starts_with('/') && !v.starts_with("//") && !v.contains('\\') => v.to_owned(),
        _ => "/".to_owned(),
    }
}

fn status_url(room: &Room, req: &RequestHeader) -> String {
    format!(
        "{PREFIX}status?room={}&return={}",
        room.name(),
        return_param(req)
    )
}

fn accept_language(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
}

/// What a visitor who must wait is told.
pub(crate) fn waiting(
    room: &Room,
    w: &WaitingRoom,
    gate: &Gate,
    wt: &Waiting,
    req: &RequestHeader,
    jar: &CookieJar<'_>,
) -> Reply {
    let reply = if client::wants_html(req) {
        let state = match wt.place.state {
            crate::config::State::Paused => PageState::Paused,
            _ => PageState::Queued,
        };
        let url = status_url(room, req);
        let html = w.page.template.render(&PageView {
            room: room.name(),
            state,
            place: Some(&wt.place),
            poll: w.config.poll_interval,
            status_url: &url,
            ticket: &wt.ticket,
            language: w.page.language_for(accept_language(req)),
        });
        Reply::new(w.config.queue_status, "text/html; charset=utf-8", html)
    } else {
        let mut body = queued_body(room, w, wt);
        body.code = Some("QUEUE_REQUIRED");
        Reply::json(503, &body).header(RETRY_AFTER, poll_ms(w).div_ceil(1000).max(1).to_string())
    };
    if wt.set_ticket {
        reply.header(SET_COOKIE, jar.ticket(gate, &wt.ticket))
    } else {
        reply
    }
}

/// What a visitor is told when the room cannot queue them: full line,
/// maintenance, or the store is unavailable.
pub(crate) fn closed(room: &Room, w: &WaitingRoom, state: PageState, req: &RequestHeader) -> Reply {
    let (code, retry) = match state {
        PageState::Full => ("QUEUE_FULL", RETRY_CLOSED_SECS),
        PageState::Maintenance => ("MAINTENANCE", RETRY_CLOSED_SECS),
        _ => ("QUEUE_REQUIRED", poll_ms(w).div_ceil(1000).max(1)),
    };
    let reply = if client::wants_html(req) {
        let html = w.page.template.render(&PageView {
            room: room.name(),
            state,
            place: None,
            poll: w.config.poll_interval,
            status_url: "",
            ticket: "",
            language: w.page.language_for(accept_language(req)),
        });
        Reply::new(503, "text/html; charset=utf-8", html)
    } else {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            code: &'static str,
            room: &'a str,
            state: &'static str,
            retry_after_ms: u64,
        }
        let state_name = match state {
            PageState::Maintenance => "maintenance",
            PageState::Full => "full",
            _ => "unavailable",
        };
        Reply::json(
            503,
            &Body {
                code,
                room: room.name(),
                state: state_name,
                retry_after_ms: retry * 1000,
            },
        )
    };
    reply.header(RETRY_AFTER, retry.to_string())
}

/// Answers a request under [`PREFIX`] or for the JWKS.
pub(crate) async fn handle(proxy: &Proxy, req: &RequestHeader, secure: bool) -> Reply {
    let path = req.uri.path();
    if path == JWKS_PATH || path == JWKS_ALIAS {
        return match &proxy.gate {
            Some(gate) => Reply::new(200, "application/json", gate.tokens.jwks())
                .header(http::header::CACHE_CONTROL, "public, max-age=300"),
            None => Reply::error(404, "NOT_FOUND", "No keys are configured."),
        };
    }
    let endpoint = path.strip_prefix(PREFIX).unwrap_or_default();
    let query = req.uri.query().unwrap_or_default();
    let param = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let get_only = req.method == http::Method::GET || req.method == http::Method::HEAD;
    match endpoint {
        "capacity" | "status" if !get_only => Reply::error(405, "METHOD_NOT_ALLOWED", "Use GET.")
            .header(http::header::ALLOW, "GET, HEAD"),
        "capacity" => capacity(proxy, req, param("room").as_deref()).await,
        "status" => {
            status(
                proxy,
                req,
                param("room").as_deref(),
                param("return").as_deref(),
                secure,
            )
            .await
        }
        "leave" if req.method != http::Method::POST => {
            Reply::error(405, "METHOD_NOT_ALLOWED", "Use POST.").header(http::header::ALLOW, "POST")
        }
        "leave" => {
            let reply = leave(proxy, req, param("room").as_deref(), secure).await;
            match param("return") {
                // A form post from a page: back to a page of the same site.
                Some(back) if reply.status() == 200 => reply
                    .with_status(303)
                    .header(http::header::LOCATION, safe_return(Some(&back))),
                _ => reply,
            }
        }
        _ => Reply::error(
            404,
            "NOT_FOUND",
            format!("No anteroom endpoint {PREFIX}{endpoint}."),
        ),
    }
}

fn room_names(proxy: &Proxy) -> String {
    proxy
        .rooms
        .iter()
        .map(Room::name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The gate and the sessions room a status or leave request is about: named,
/// the only one, or the one the visitor holds a token for.
fn waiting_room<'a>(
    proxy: &'a Proxy,
    req: &RequestHeader,
    name: Option<&str>,
) -> Result<(&'a Gate, &'a Room, &'a WaitingRoom), Reply> {
    let gate = proxy
        .gate
        .as_deref()
        .ok_or_else(|| Reply::error(404, "NOT_FOUND", "There is no waiting room."))?;
    let mut candidates = proxy.rooms.waiting_rooms();
    if let Some(name) = name {
        return candidates
            .find(|(r, _)| r.name() == name)
            .map(|(r, w)| (gate, r, w))
            .ok_or_else(|| {
                Reply::error(
                    404,
                    "UNKNOWN_ROOM",
                    format!("No waiting room named {name:?}."),
                )
            });
    }
    let all: Vec<_> = candidates.collect();
    if let [(room, w)] = all.as_slice() {
        return Ok((gate, *room, *w));
    }
    all.into_iter()
        .find(|(r, _)| {
            gate.find_ticket(r.name(), req).is_some() || gate.find_pass(r.name(), req).is_some()
        })
        .map(|(r, w)| (gate, r, w))
        .ok_or_else(|| {
            Reply::error(
                400,
                "ROOM_REQUIRED",
                format!("Give ?room=NAME (rooms: {}).", room_names(proxy)),
            )
        })
}

async fn capacity(proxy: &Proxy, req: &RequestHeader, name: Option<&str>) -> Reply {
    let Some(name) = name else {
        return Reply::error(
            400,
            "ROOM_REQUIRED",
            format!("Give ?room=NAME (rooms: {}).", room_names(proxy)),
        );
    };
    let Some(room) = proxy.rooms.by_name(name) else {
        return Reply::error(404, "UNKNOWN_ROOM", format!("No room named {name:?}."));
    };
    if let Kind::SharedRequests(slots) = room.kind() {
        let _ = slots.refresh().await;
    }
    let (Kind::Sessions(w), Some(gate)) = (room.kind(), &proxy.gate) else {
        return Reply::json(200, &Capacity::of(room));
    };
    // Fresh numbers from the store, and the visitor's place when they hold a ticket.
    if let Ok(snapshot) = gate.store().snapshot(name).await {
        w.observe(snapshot);
    }
    let mut body = Capacity::of(room);
    if gate.find_ticket(name, req).is_some() {
        if let Status::Queued(wt) = gate.status(room, w, req).await {
            body.position = Some(wt.place.position());
            body.wait_ms = Some(wt.place.wait.ms);
        }
    }
    Reply::json(200, &body)
}

async fn status(
    proxy: &Proxy,
    req: &RequestHeader,
    name: Option<&str>,
    back: Option<&str>,
    secure: bool,
) -> Reply {
    let (gate, room, w) = match waiting_room(proxy, req, name) {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    let jar = CookieJar::new(w, secure);
    let base = StatusBody {
        room: room.name(),
        room_state: w.state().as_str(),
        poll_after_ms: poll_ms(w),
        ..StatusBody::default()
    };
    match gate.status(room, w, req).await {
        Status::Admitted(visit) => admitted(room, w, &visit, base, safe_return(back), &jar),
        Status::Queued(wt) => {
            let reply = Reply::json(200, &queued_body(room, w, &wt));
            if wt.set_ticket {
                reply.header(SET_COOKIE, jar.ticket(gate, &wt.ticket))
            } else {
                reply
            }
        }
        Status::Expired => Reply::json(
            200,
            &StatusBody {
                state: "expired",
                ..base
            },
        ),
        Status::Maintenance => Reply::json(
            200,
            &StatusBody {
                state: "maintenance",
                ..base
            },
        ),
        Status::Unavailable => Reply::json(
            200,
            &StatusBody {
                state: "unavailable",
                ..base
            },
        ),
    }
}

fn admitted(
    room: &Room,
    w: &WaitingRoom,
    visit: &Visit,
    base: StatusBody<'_>,
    redirect: String,
    jar: &CookieJar<'_>,
) -> Reply {
    let body = StatusBody {
        state: "admitted",
        wait_ms: visit.session.wait_ms,
        pass: visit.pass.to_str().ok(),
        redirect: Some(redirect),
        room: room.name(),
        ..base
    };
    let mut reply = Reply::json(200, &body);
    if visit.set_pass {
        reply = reply.header(SET_COOKIE, jar.pass(w, &visit.pass));
    }
    if visit.clear_ticket {
        reply = reply.header(SET_COOKIE, jar.clear(TICKET_COOKIE));
    }
    reply
}

async fn leave(proxy: &Proxy, req: &RequestHeader, name: Option<&str>, secure: bool) -> Reply {
    let (gate, room, w) = match waiting_room(proxy, req, name) {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    let jar = CookieJar::new(w, secure);
    #[derive(Serialize)]
    struct Left<'a> {
        state: &'static str,
        room: &'a str,
    }
    if let Some((token, claims, _)) = gate.find_pass(room.name(), req) {
        if let Some(id) = crate::store::SessionId::parse(&claims.sub) {
            gate.release(room.name(), id, &token, "leave").await;
        }
        return Reply::json(
            200,
            &Left {
                state: "released",
                room: room.name(),
            },
        )
        .header(SET_COOKIE, jar.clear(PASS_COOKIE));
    }
    if let Some((token, _)) = gate.find_ticket(room.name(), req) {
        gate.leave_line(room.name(), &token).await;
        return Reply::json(
            200,
            &Left {
                state: "left",
                room: room.name(),
            },
        )
        .header(SET_COOKIE, jar.clear(TICKET_COOKIE));
    }
    Reply::json(
        200,
        &Left {
            state: "expired",
            room: room.name(),
        },
    )
}
