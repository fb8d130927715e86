//! What a visitor is told when anteroom answers itself: the waiting page for
//! a browser, `503 QUEUE_REQUIRED` JSON for everything else, the bodies of
//! `/__anteroom/capacity` and `/__anteroom/status`, and the cookies that
//! carry passes and tickets. Used by the proxy and the public API alike.

use std::time::Duration;

use bytes::Bytes;
use http::header::{LOCATION, RETRY_AFTER, SET_COOKIE};
use serde::Serialize;

use crate::challenge;
use crate::clients::Limited;
use crate::config::{RESERVED_PREFIX, State};
use crate::gate::{Beat, PASS_COOKIE, TICKET_COOKIE, Visit, Waiting};
use crate::page::{PageState, PageView};
use crate::request::canonical::{self, PathPolicy};
use crate::request::cookies;
use crate::request::facts::Facts;
use crate::response::Reply;
use crate::room::{Room, WaitingRoom};

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
pub struct StatusBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    state: &'static str,
    room: &'a str,
    room_state: &'static str,
    position: u32,
    ahead: u32,
    /// `null` when the wait cannot be told (longer than a day).
    wait_ms: Option<u64>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    challenge: Option<Puzzle<'a>>,
}

/// The proof of work a waiting visitor is asked for (see `challenge`).
#[derive(Debug, Serialize)]
struct Puzzle<'a> {
    algorithm: &'static str,
    seed: &'a str,
    difficulty: u8,
    header: &'static str,
}

impl<'a> StatusBody<'a> {
    /// A status without a place: `expired`, `maintenance`, `unavailable`.
    pub fn plain(room: &'a Room, w: &WaitingRoom, state: &'static str) -> StatusBody<'a> {
        StatusBody {
            state,
            room: room.name(),
            room_state: w.state().as_str(),
            poll_after_ms: poll_ms(w),
            wait_ms: Some(0),
            ..StatusBody::default()
        }
    }

    /// A visitor in line.
    pub fn queued(room: &'a Room, w: &WaitingRoom, wt: &'a Waiting) -> StatusBody<'a> {
        let p = &wt.place;
        StatusBody {
            state: "queued",
            room: room.name(),
            room_state: p.state.as_str(),
            position: p.position(),
            ahead: p.ahead_told(),
            wait_ms: p.wait.told(),
            wait_known: p.wait.known && p.wait.told().is_some(),
            poll_after_ms: poll_ms(w),
            queue_length: p.queue_length,
            available: p.available,
            ticket: Some(&wt.ticket),
            challenge: wt
                .challenge
                .as_deref()
                .zip(w.config.challenge)
                .map(|(seed, pow)| Puzzle {
                    algorithm: challenge::ALGORITHM,
                    seed,
                    difficulty: pow.difficulty,
                    header: challenge::HEADER,
                }),
            ..StatusBody::default()
        }
    }

    /// A visitor let in, sent on to `redirect`.
    pub fn admitted(
        room: &'a Room,
        w: &WaitingRoom,
        visit: &'a Visit,
        redirect: String,
    ) -> StatusBody<'a> {
        StatusBody {
            wait_ms: Some(visit.session.wait_ms),
            pass: visit.pass.to_str().ok(),
            redirect: Some(redirect),
            ..StatusBody::plain(room, w, "admitted")
        }
    }
}

/// What a waiting visitor's event stream (`/__anteroom/events`) has told
/// them, so that a heartbeat that changes nothing they see sends nothing.
#[derive(Debug, Default)]
pub struct Told {
    /// Place, wait and room state last sent.
    last: Option<(u32, Option<u64>, &'static str)>,
}

/// One event of a stream, ready to write, and whether the stream ends with it.
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    /// `event: status` with the same JSON body a status poll answers.
    pub frame: Bytes,
    /// The visitor's next step is a poll (their turn, or no place).
    pub last: bool,
}

/// A comment that keeps an idle stream open through proxies and finds
/// clients that are gone.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

impl Told {
    /// The event this heartbeat calls for: a changed place, a wait that moved
    /// by a tenth or more, a turn or an end. `None` when nothing changed.
    pub fn event(&mut self, room: &Room, w: &WaitingRoom, beat: &Beat) -> Option<Event> {
        let (body, last) = match beat {
            Beat::Queued(wt) => {
                let body = StatusBody::queued(room, w, wt);
                let now = (body.position, body.wait_ms, body.room_state);
                if self.last.is_some_and(|was| !changed(was, now)) {
                    return None;
                }
                self.last = Some(now);
                (body, false)
            }
            Beat::Turn => (StatusBody::plain(room, w, "turn"), true),
            Beat::Expired => (StatusBody::plain(room, w, "expired"), true),
            Beat::Maintenance => (StatusBody::plain(room, w, "maintenance"), true),
            // The place is as last told; the next beat asks again.
            Beat::Unavailable | Beat::Limited => return None,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut frame = Vec::with_capacity(json.len() + 24);
        frame.extend_from_slice(b"event: status\ndata: ");
        frame.extend_from_slice(&json);
        frame.extend_from_slice(b"\n\n");
        Some(Event {
            frame: Bytes::from(frame),
            last,
        })
    }
}

/// Whether what a visitor sees moved: place, room state, whether the wait
/// is told, or the wait by a tenth or more.
fn changed(was: (u32, Option<u64>, &str), now: (u32, Option<u64>, &str)) -> bool {
    let wait_moved = match (was.1, now.1) {
        (Some(a), Some(b)) => a.abs_diff(b) * 10 >= a.max(1),
        (a, b) => a.is_some() != b.is_some(),
    };
    was.0 != now.0 || was.2 != now.2 || wait_moved
}

fn poll_ms(w: &WaitingRoom) -> u64 {
    u64::try_from(w.config.poll_interval.as_millis()).unwrap_or(u64::MAX)
}

/// Whole seconds for `Retry-After`, at least 1.
fn retry_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

/// Cookie settings of one sessions room for one request.
pub struct CookieJar<'a> {
    w: &'a WaitingRoom,
    ticket_ttl: Duration,
    secure: bool,
}

impl<'a> CookieJar<'a> {
    /// The cookies of a room for a client that did (or did not) come over TLS.
    pub fn new(w: &'a WaitingRoom, ticket_ttl: Duration, secure: bool) -> CookieJar<'a> {
        CookieJar {
            w,
            ticket_ttl,
            secure,
        }
    }

    fn path(&self) -> &str {
        &self.w.config.cookie_path
    }

    /// `Set-Cookie` for a pass.
    pub fn pass(&self, token: &http::HeaderValue) -> String {
        let token = token.to_str().unwrap_or_default();
        let max_age = self.w.config.session_ttl.as_secs().max(1);
        cookies::set(PASS_COOKIE, token, self.path(), max_age, self.secure)
    }

    /// `Set-Cookie` for a ticket.
    pub fn ticket(&self, token: &str) -> String {
        let max_age = self.ticket_ttl.as_secs().max(1);
        cookies::set(TICKET_COOKIE, token, self.path(), max_age, self.secure)
    }

    /// `Set-Cookie` that deletes a cookie.
    pub fn clear(&self, name: &str) -> String {
        cookies::clear(name, self.path(), self.secure)
    }

    /// The cookie a waiting visitor's answer carries: their ticket, when new or renewed.
    pub fn for_waiting(&self, wt: &Waiting) -> Option<String> {
        wt.set_ticket.then(|| self.ticket(&wt.ticket))
    }

    /// The cookies an admitted visitor's answer carries: a new or renewed
    /// pass (or, when the session just ended, none), and no more ticket
    /// once they came in from the line.
    pub fn for_visit(&self, visit: &Visit, ended: bool) -> impl Iterator<Item = String> {
        let pass = if ended {
            Some(self.clear(PASS_COOKIE))
        } else {
            visit.set_pass.then(|| self.pass(&visit.pass))
        };
        let ticket = visit.clear_ticket.then(|| self.clear(TICKET_COOKIE));
        pass.into_iter().chain(ticket)
    }
}

/// A path of this site to send a visitor back to, in canonical form; `/`
/// for anything else. Only a path that starts with a single `/` and holds no
/// whitespace, control character or backslash qualifies: browsers drop tabs
/// and newlines and read `\\` as `/`, so `/\t/evil.example` or `/\\evil.example`
/// would be another site.
pub fn safe_return(value: Option<&str>) -> String {
    let Some(v) = value else {
        return "/".to_owned();
    };
    let plain = v.starts_with('/')
        && !v.starts_with("//")
        && !v
            .bytes()
            .any(|b| b == b'\\' || b.is_ascii_whitespace() || b.is_ascii_control());
    if !plain {
        return "/".to_owned();
    }
    match canonical::target(v.as_bytes(), PathPolicy::Reject) {
        Ok(target) if target.authority.is_none() && !target.path.starts_with("//") => {
            target.origin_form()
        }
        _ => "/".to_owned(),
    }
}

/// The same request over HTTPS, on a plain listener with `redirect_https`:
/// `308` (the method and body are kept) to the request's host on `port`.
/// Without a host there is nowhere to send it.
pub fn to_https(facts: &Facts<'_>, port: u16) -> Reply {
    let Some(host) = facts.host_name() else {
        return Reply::error(400, "BAD_REQUEST", "A Host header is needed.");
    };
    let host = if host.contains(':') {
        format!("[{host}]") // an IPv6 literal
    } else {
        host.to_owned()
    };
    let port = if port == 443 {
        String::new()
    } else {
        format!(":{port}")
    };
    Reply::text(308, "Moved to HTTPS.\n")
        .header(LOCATION, format!("https://{host}{port}{}", facts.target()))
}

/// anteroom's answer when proxying failed with `e`, decided here once for
/// every failure; `None` when the client is gone and nothing can be sent.
pub fn failed(e: &pingora::Error) -> Option<Reply> {
    use pingora::{ErrorSource, ErrorType};
    match (e.esource(), e.etype()) {
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
    }
}

/// `503 QUEUE_REQUIRED` from a full `requests` room, to be retried after `retry`.
pub fn queue_required(room: &str, retry: Duration) -> Reply {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        code: &'static str,
        room: &'a str,
        retry_after_ms: u64,
        message: &'static str,
    }
    let retry_ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX);
    Reply::json(
        503,
        &Body {
            code: "QUEUE_REQUIRED",
            room,
            retry_after_ms: retry_ms,
            message: "The room is at capacity. Retry after the given time.",
        },
    )
    .header(RETRY_AFTER, retry_secs(retry_ms).to_string())
}

/// What a visitor who must wait is told: the waiting page (which goes on
/// to `back`, a path of this site, once they are admitted), or
/// `QUEUE_REQUIRED` JSON with their ticket.
pub fn waiting(
    room: &Room,
    w: &WaitingRoom,
    wt: &Waiting,
    facts: &Facts<'_>,
    jar: &CookieJar<'_>,
    back: &str,
) -> Reply {
    let reply = if facts.wants_html() {
        let state = match wt.place.state {
            State::Paused => PageState::Paused,
            _ => PageState::Queued,
        };
        let back: String = form_urlencoded::byte_serialize(back.as_bytes()).collect();
        let url = format!("{RESERVED_PREFIX}status?room={}&return={back}", room.name());
        let html = w.page.template.render(&PageView {
            room: room.name(),
            state,
            place: Some(&wt.place),
            poll: w.config.poll_interval,
            status_url: &url,
            ticket: &wt.ticket,
            challenge: wt
                .challenge
                .as_deref()
                .zip(w.config.challenge.map(|c| c.difficulty)),
            language: w.page.language_for(facts.accept_language()),
        });
        Reply::new(w.config.queue_status, "text/html; charset=utf-8", html)
    } else {
        let mut body = StatusBody::queued(room, w, wt);
        body.code = Some("QUEUE_REQUIRED");
        Reply::json(503, &body).header(RETRY_AFTER, retry_secs(poll_ms(w)).to_string())
    };
    reply.headers(SET_COOKIE, jar.for_waiting(wt))
}

/// `Link` that has a browser let in on arrival confirm its place at once.
pub fn confirm_link(room: &Room) -> String {
    format!(
        "<{RESERVED_PREFIX}confirm?room={}>; rel=preload; as=fetch",
        room.name()
    )
}

/// The page for a browser whose status poll came without the ticket it was
/// given (it keeps no cookies): it says so, and does not reload itself.
pub fn no_cookies(room: &Room, w: &WaitingRoom, facts: &Facts<'_>) -> Reply {
    let html = w.page.template.render(&PageView {
        room: room.name(),
        state: PageState::NoCookies,
        place: None,
        poll: w.config.poll_interval,
        status_url: "",
        ticket: "",
        challenge: None,
        language: w.page.language_for(facts.accept_language()),
    });
    Reply::new(200, "text/html; charset=utf-8", html)
}

/// `429 RATE_LIMITED` for a client over a per-client limit, to come back
/// after `Retry-After`. A browser gets a page that tries again by itself;
/// a waiting visitor's place is untouched (their poll was not counted).
pub fn limited(room: &Room, w: &WaitingRoom, limited: &Limited, facts: &Facts<'_>) -> Reply {
    let retry_ms = u64::try_from(limited.retry_after.as_millis()).unwrap_or(u64::MAX);
    let retry = retry_secs(retry_ms);
    let poll = Duration::from_secs(retry);
    let turned_away = TurnedAway {
        code: "RATE_LIMITED",
        room: room.name(),
        state: None,
        limit: Some(limited.limit.as_str()),
        retry_after_ms: retry * 1000,
        message: Some("Too many requests from this client. Retry after the given time."),
    };
    turned_away.reply(w, facts, PageState::Limited, poll, 429)
}

/// What a visitor is told when the room cannot queue them: full line,
/// maintenance, or the store is unavailable.
pub fn closed(room: &Room, w: &WaitingRoom, state: PageState, facts: &Facts<'_>) -> Reply {
    let (code, state_name, retry) = match state {
        PageState::Full => ("QUEUE_FULL", "full", RETRY_CLOSED_SECS),
        PageState::Maintenance => ("MAINTENANCE", "maintenance", RETRY_CLOSED_SECS),
        _ => ("QUEUE_REQUIRED", "unavailable", retry_secs(poll_ms(w))),
    };
    let turned_away = TurnedAway {
        code,
        room: room.name(),
        state: Some(state_name),
        limit: None,
        retry_after_ms: retry * 1000,
        message: None,
    };
    turned_away.reply(w, facts, state, w.config.poll_interval, 503)
}

/// A visitor turned away without a place: the JSON an API client gets.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TurnedAway<'a> {
    code: &'static str,
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<&'static str>,
    retry_after_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'static str>,
}

impl TurnedAway<'_> {
    /// The answer, with `status`: the JSON, or for a browser a page in
    /// `state` that looks again after `poll`; either with `Retry-After`.
    fn reply(
        &self,
        w: &WaitingRoom,
        facts: &Facts<'_>,
        state: PageState,
        poll: Duration,
        status: u16,
    ) -> Reply {
        let reply = if facts.wants_html() {
            let html = w.page.template.render(&PageView {
                room: self.room,
                state,
                place: None,
                poll,
                status_url: "",
                ticket: "",
                challenge: None,
                language: w.page.language_for(facts.accept_language()),
            });
            Reply::new(status, "text/html; charset=utf-8", html)
        } else {
            Reply::json(status, self)
        };
        reply.header(RETRY_AFTER, (self.retry_after_ms / 1000).to_string())
    }
}
