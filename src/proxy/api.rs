//! anteroom's own endpoints on the public listener: everything under
//! [`RESERVED_PREFIX`] (never proxied) and the JWKS.

use http::header::{ALLOW, LOCATION, SET_COOKIE};
use serde::Serialize;

use crate::config::RESERVED_PREFIX;
use crate::gate::{Gate, PASS_COOKIE, Status, TICKET_COOKIE};
use crate::page::{self, PageState};
use crate::proxy::answers::{self, Capacity, CookieJar, StatusBody};
use crate::request::facts::Facts;
use crate::response::Reply;
use crate::room::{Kind, Room, Rooms, WaitingRoom};
use crate::store::SessionId;

/// Where the public keys are published for apps that verify passes.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Whether anteroom answers this path itself (the JWKS only when it signs).
pub fn serves(path: &str, signs: bool) -> bool {
    path.starts_with(RESERVED_PREFIX) || signs && path == JWKS_PATH
}

/// The rooms and the gate the endpoints answer about.
#[derive(Clone, Copy)]
pub struct Api<'a> {
    /// Every room.
    pub rooms: &'a Rooms,
    /// The gate of the sessions rooms, when there are any.
    pub gate: Option<&'a Gate>,
}

impl Api<'_> {
    /// Answers a request for a path it [`serves`].
    pub async fn handle(&self, facts: &Facts<'_>) -> Reply {
        let path = facts.path.as_ref();
        let endpoint = path.strip_prefix(RESERVED_PREFIX).unwrap_or_default();
        if path == JWKS_PATH || endpoint == "jwks.json" {
            return match self.gate {
                // Cached for less than the overlap a key rotation keeps
                // (docs/security.md), revalidated by its tag.
                Some(gate) => Reply::new(200, "application/json", gate.tokens.jwks())
                    .public("public, max-age=300")
                    .unless_unchanged(
                        gate.tokens.jwks_etag(),
                        facts.req.headers.get(http::header::IF_NONE_MATCH),
                    ),
                None => Reply::error(404, "NOT_FOUND", "No keys are configured."),
            };
        }
        let query = facts.query.unwrap_or_default();
        let param = |name: &str| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let method = &facts.req.method;
        let get_only = method == http::Method::GET || method == http::Method::HEAD;
        match endpoint {
            "capacity" | "status" | "confirm" | "client.js" if !get_only => {
                Reply::error(405, "METHOD_NOT_ALLOWED", "Use GET.").header(ALLOW, "GET, HEAD")
            }
            // The same for everyone until an upgrade changes it.
            "client.js" => Reply::new(200, "text/javascript; charset=utf-8", page::CLIENT_JS)
                .public("public, max-age=3600")
                .unless_unchanged(
                    page::client_js_etag(),
                    facts.req.headers.get(http::header::IF_NONE_MATCH),
                ),
            "capacity" => self.capacity(facts, param("room").as_deref()).await,
            "confirm" => self.confirm(facts, param("room").as_deref()).await,
            "status" => {
                self.status(facts, param("room").as_deref(), param("return").as_deref())
                    .await
            }
            "leave" if method != http::Method::POST => {
                Reply::error(405, "METHOD_NOT_ALLOWED", "Use POST.").header(ALLOW, "POST")
            }
            "leave" => {
                let reply = self.leave(facts, param("room").as_deref()).await;
                match param("return") {
                    // A form post from a page: back to a page of the same site.
                    Some(back) if reply.status() == 200 => reply
                        .with_status(303)
                        .header(LOCATION, answers::safe_return(Some(&back))),
                    _ => reply,
                }
            }
            _ => Reply::error(
                404,
                "NOT_FOUND",
                format!("No anteroom endpoint {RESERVED_PREFIX}{endpoint}."),
            ),
        }
    }

    fn room_names(&self) -> String {
        self.rooms
            .iter()
            .map(Room::name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn room_required(&self) -> Reply {
        Reply::error(
            400,
            "ROOM_REQUIRED",
            format!("Give ?room=NAME (rooms: {}).", self.room_names()),
        )
    }

    /// The gate and the sessions room a status or leave request is about:
    /// named, the only one, or the one the visitor holds a token for.
    pub fn waiting_room(
        &self,
        facts: &Facts<'_>,
        name: Option<&str>,
    ) -> Result<(&Gate, &Room, &WaitingRoom), Reply> {
        let gate = self
            .gate
            .ok_or_else(|| Reply::error(404, "NOT_FOUND", "There is no waiting room."))?;
        let mut candidates = self.rooms.waiting_rooms();
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
            .find(|(r, w)| {
                gate.find_ticket(r.name(), w, facts).is_some()
                    || gate.find_pass(r.name(), w, facts).is_some()
            })
            .map(|(r, w)| (gate, r, w))
            .ok_or_else(|| self.room_required())
    }

    async fn capacity(&self, facts: &Facts<'_>, name: Option<&str>) -> Reply {
        let Some(name) = name else {
            return self.room_required();
        };
        let Some(room) = self.rooms.by_name(name) else {
            return Reply::error(404, "UNKNOWN_ROOM", format!("No room named {name:?}."));
        };
        let (w, gate) = match (room.kind(), self.gate) {
            (Kind::Sessions(w), Some(gate)) => (w, gate),
            (Kind::Requests(limits), _) => {
                // Shared slots: fresh numbers from the store; as last read if it fails.
                let _ = limits.slots.refresh().await;
                return Reply::json(200, &Capacity::of(room));
            }
            (Kind::Sessions(_), None) => return Reply::json(200, &Capacity::of(room)),
        };
        // Fresh numbers from the store, and the visitor's place when they hold a ticket.
        if let Ok(snapshot) = gate.store().snapshot(name).await {
            w.observe(snapshot);
        }
        let mut body = Capacity::of(room);
        if gate.find_ticket(name, w, facts).is_some() {
            if let Status::Queued(wt) = gate.status(room, w, facts).await {
                body.position = Some(wt.place.position());
                body.wait_ms = wt.place.wait.told();
            }
        }
        Reply::json(200, &body)
    }

    /// `GET /__anteroom/confirm?room=NAME`, which a browser let in at once
    /// fetches by itself (`Link: rel=preload` on its first answer) with its
    /// pass cookie: the place is theirs from now, not only after their next
    /// click. Always `204`, so that it tells nobody anything.
    async fn confirm(&self, facts: &Facts<'_>, name: Option<&str>) -> Reply {
        if let Ok((gate, room, w)) = self.waiting_room(facts, name) {
            gate.confirm(room.name(), w, facts).await;
        }
        Reply::new(204, "text/plain; charset=utf-8", "")
    }

    async fn status(&self, facts: &Facts<'_>, name: Option<&str>, back: Option<&str>) -> Reply {
        let (gate, room, w) = match self.waiting_room(facts, name) {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        let jar = CookieJar::new(w, gate.ticket_ttl(), facts.secure);
        if facts.wants_html() {
            return self.status_page(gate, room, w, facts, back, &jar).await;
        }
        match gate.status(room, w, facts).await {
            Status::Admitted(visit) => {
                let body = StatusBody::admitted(room, w, &visit, answers::safe_return(back));
                Reply::json(200, &body).headers(SET_COOKIE, jar.for_visit(&visit, false))
            }
            Status::Queued(wt) => Reply::json(200, &StatusBody::queued(room, w, &wt))
                .headers(SET_COOKIE, jar.for_waiting(&wt)),
            Status::Expired => Reply::json(200, &StatusBody::plain(room, w, "expired")),
            Status::Limited(limited) => answers::limited(room, w, &limited, facts),
            Status::Maintenance => Reply::json(200, &StatusBody::plain(room, w, "maintenance")),
            Status::Unavailable => Reply::json(200, &StatusBody::plain(room, w, "unavailable")),
        }
    }

    /// The status as a browser navigating to it sees it (the waiting page's
    /// refresh without JavaScript): in when admitted, the waiting page while
    /// queued, and, when the browser came without its ticket cookie, a page
    /// that says cookies are needed instead of another turn in line.
    async fn status_page(
        &self,
        gate: &Gate,
        room: &Room,
        w: &WaitingRoom,
        facts: &Facts<'_>,
        back: Option<&str>,
        jar: &CookieJar<'_>,
    ) -> Reply {
        let back = answers::safe_return(back);
        if gate.find_ticket(room.name(), w, facts).is_none()
            && gate.find_pass(room.name(), w, facts).is_none()
        {
            let sent_cookies = facts.req.headers.contains_key(http::header::COOKIE);
            return if sent_cookies {
                // Its ticket expired: back to the page, which lines it up again.
                Reply::new(303, "text/plain; charset=utf-8", "").header(LOCATION, back)
            } else {
                answers::no_cookies(room, w, facts)
            };
        }
        match gate.status(room, w, facts).await {
            Status::Admitted(visit) => Reply::new(303, "text/plain; charset=utf-8", "")
                .header(LOCATION, back)
                .headers(SET_COOKIE, jar.for_visit(&visit, false)),
            Status::Queued(wt) => answers::waiting(room, w, &wt, facts, jar, &back),
            Status::Expired => {
                Reply::new(303, "text/plain; charset=utf-8", "").header(LOCATION, back)
            }
            Status::Limited(limited) => answers::limited(room, w, &limited, facts),
            Status::Maintenance => answers::closed(room, w, PageState::Maintenance, facts),
            Status::Unavailable => answers::closed(room, w, PageState::Unavailable, facts),
        }
    }

    async fn leave(&self, facts: &Facts<'_>, name: Option<&str>) -> Reply {
        let (gate, room, w) = match self.waiting_room(facts, name) {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        let jar = CookieJar::new(w, gate.ticket_ttl(), facts.secure);
        #[derive(Serialize)]
        struct Left<'a> {
            state: &'static str,
            room: &'a str,
        }
        let left = |state| {
            Reply::json(
                200,
                &Left {
                    state,
                    room: room.name(),
                },
            )
        };
        if let Some((token, claims, _)) = gate.find_pass(room.name(), w, facts) {
            if let Some(id) = SessionId::parse(&claims.sub) {
                gate.release(room.name(), id, &token, "leave").await;
            }
            return left("released").header(SET_COOKIE, jar.clear(PASS_COOKIE));
        }
        if let Some((token, _)) = gate.find_ticket(room.name(), w, facts) {
            gate.leave_line(room.name(), &token).await;
            return left("left").header(SET_COOKIE, jar.clear(TICKET_COOKIE));
        }
        left("expired")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{Decision, TICKET_HEADER};
    use crate::testing::{Fixture, request};

    fn fixture() -> Fixture {
        Fixture::new(
            "[[room]]\nname = \"web\"\nmode = \"sessions\"\ncapacity = 1\n[[room]]\nname = \"llm\"\nmode = \"requests\"\ncapacity = 3",
            "room = \"web\"",
        )
    }

    async fn handle(f: &Fixture, req: &pingora::http::RequestHeader) -> (u16, serde_json::Value) {
        let api = Api {
            rooms: &f.rooms,
            gate: Some(&f.gate),
        };
        let reply = api.handle(&f.facts(req)).await;
        let status = reply.status();
        let body = reply.into_response().into_body();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[test]
    fn it_serves_its_prefix_and_the_jwks_when_signing() {
        assert!(serves("/__anteroom/status", false));
        assert!(serves(JWKS_PATH, true));
        assert!(!serves(JWKS_PATH, false));
        assert!(!serves("/__anteroomx", true));
    }

    #[tokio::test]
    async fn capacity_of_both_kinds_of_room() {
        let f = fixture();
        let (status, body) =
            handle(&f, &request("GET", "/__anteroom/capacity?room=llm", &[])).await;
        assert_eq!(status, 200);
        assert_eq!(body["capacity"], 3);
        assert_eq!(body["available"], 3);
        let (_, body) = handle(&f, &request("GET", "/__anteroom/capacity?room=web", &[])).await;
        assert_eq!(
            (body["capacity"].as_u64(), body["inUse"].as_u64()),
            (Some(1), Some(0))
        );
        let (status, body) = handle(&f, &request("GET", "/__anteroom/capacity", &[])).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("ROOM_REQUIRED"))
        );
        let (status, _) = handle(&f, &request("GET", "/__anteroom/capacity?room=nope", &[])).await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn status_tells_a_ticket_holder_their_place() {
        let f = fixture();
        let (room, w) = f.waiting_room("web");
        let anyone = request("GET", "/", &[]);
        assert!(matches!(
            f.gate.decide(room, w, &f.facts(&anyone)).await,
            Decision::Admit(_)
        ));
        let Decision::Wait(wt) = f.gate.decide(room, w, &f.facts(&anyone)).await else {
            panic!("not queued")
        };
        let poll = request(
            "GET",
            "/__anteroom/status?room=web",
            &[(TICKET_HEADER, wt.ticket.as_str())],
        );
        let (status, body) = handle(&f, &poll).await;
        assert_eq!(status, 200);
        assert_eq!(body["state"], "queued");
        assert_eq!(body["position"], 1);
        // The only waiting room needs no name; without a ticket the place is gone.
        let (_, body) = handle(&f, &request("GET", "/__anteroom/status", &[])).await;
        assert_eq!(body["state"], "expired");
    }

    #[tokio::test]
    async fn methods_endpoints_and_redirects() {
        let f = fixture();
        let (status, _) = handle(&f, &request("POST", "/__anteroom/status", &[])).await;
        assert_eq!(status, 405);
        let (status, _) = handle(&f, &request("GET", "/__anteroom/leave", &[])).await;
        assert_eq!(status, 405);
        let (status, body) = handle(&f, &request("GET", "/__anteroom/nope", &[])).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("NOT_FOUND")));
        let (status, body) = handle(&f, &request("GET", JWKS_PATH, &[])).await;
        assert_eq!(status, 200);
        assert_eq!(body["keys"][0]["alg"], "RS256");
        let api = Api {
            rooms: &f.rooms,
            gate: Some(&f.gate),
        };
        for (back, location) in [
            ("/shop?x=1", "/shop?x=1"),
            ("//evil.example/", "/"),
            ("https://evil.example/", "/"),
        ] {
            let target = format!(
                "/__anteroom/leave?return={}",
                form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>()
            );
            let req = request("POST", &target, &[]);
            let reply = api.handle(&f.facts(&req)).await;
            assert_eq!(reply.status(), 303);
            let response = reply.into_response();
            assert_eq!(response.headers()[LOCATION], location, "{back}");
        }
    }
}
