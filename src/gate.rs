//! The admission decision for a `sessions` room: who is let through, who
//! waits, and what they are told. It reads the request's tokens, asks the
//! store one atomic question, and returns a decision the proxy carries out.
//!
//! Order of checks: a valid pass (admitted visitor: a cached signature check
//! and, at most once per `touch_interval`, a store touch), then a valid
//! ticket (a waiting visitor's heartbeat, within `polls_per_minute`), then a
//! new arrival (within `arrivals_per_minute` and `tickets_per_client`). A
//! token bound to another client (`bind`) counts as none.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderValue;
use http::header::USER_AGENT;
use ipnet::IpNet;
use quick_cache::sync::Cache;

use crate::attribution::Utm;
use crate::bypass::{self, AppJwt};
use crate::challenge;
use crate::clients::{self, Limited};
use crate::config::{self, Bind, OnStoreError, State, UnknownClients};
use crate::events::VisitorEvents;
use crate::request::cookies;
use crate::request::facts::Facts;
use crate::room::{Room, Rooms, WaitingRoom};
use crate::store::{
    Adopt, Arrival, Lane, Newcomer, Place, Polled, SessionId, SessionInfo, Store, StoreError,
    now_millis,
};
use crate::token::{Claims, Kind, Tokens, now_secs};

/// Cookie holding a pass.
pub const PASS_COOKIE: &str = "anteroom_pass";
/// Cookie holding a ticket.
pub const TICKET_COOKIE: &str = "anteroom_ticket";
/// Header an API client may send its pass in.
pub const PASS_HEADER: &str = "x-anteroom-pass";
/// Header an API client may send its ticket in.
pub const TICKET_HEADER: &str = "x-anteroom-ticket";
/// Header that makes an API client's arrival idempotent.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Longest `Idempotency-Key` taken (as Stripe's).
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Where a visitor's pass came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassSource {
    /// The `anteroom_pass` cookie.
    Cookie,
    /// `X-Anteroom-Pass`.
    Header,
    /// `Authorization: Bearer` (removed before forwarding).
    Authorization,
}

/// An admitted visitor's request, to be forwarded.
#[derive(Debug, Clone)]
pub struct Visit {
    /// Their session.
    pub session: SessionInfo,
    /// The pass to forward upstream (current or renewed).
    pub pass: HeaderValue,
    /// Where the pass came from (None: issued on this request).
    pub source: Option<PassSource>,
    /// A new or renewed pass to set as a cookie.
    pub set_pass: bool,
    /// Whether a ticket cookie should be cleared (just admitted from the line).
    pub clear_ticket: bool,
}

impl Visit {
    /// Let in on this very request, on arrival (not from the line): the
    /// place waits for the visitor to come back with the pass.
    pub fn on_arrival(&self) -> bool {
        self.source.is_none() && !self.clear_ticket
    }
}

/// A visitor who has to wait.
#[derive(Debug, Clone)]
pub struct Waiting {
    /// Their place.
    pub place: Place,
    /// Their ticket (current or renewed).
    pub ticket: String,
    /// A new or renewed ticket to set as a cookie.
    pub set_ticket: bool,
    /// The seed of the puzzle to solve before the place counts (a room
    /// with `challenge = "pow"`, a ticket not yet confirmed).
    pub challenge: Option<String>,
}

/// What to do with a request to a sessions room.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Forward it.
    Admit(Box<Visit>),
    /// Answer with the waiting page or `QUEUE_REQUIRED`.
    Wait(Box<Waiting>),
    /// The line is full.
    Full,
    /// The client is over one of the room's per-client limits.
    Limited(Limited),
    /// The request cannot be decided as sent (a malformed `Idempotency-Key`).
    BadRequest(&'static str),
    /// A newcomer whose address is unknown, in a room with
    /// `unknown_clients = "refuse"`.
    UnknownClient,
    /// The room is closed for maintenance.
    Maintenance,
    /// The store cannot answer; new visitors are turned away (`on_store_error = "closed"`).
    Unavailable,
    /// The store cannot answer; the request goes through unguarded (`on_store_error = "open"`).
    Open,
}

/// The answer to `GET /__anteroom/status`.
#[derive(Debug, Clone)]
pub enum Status {
    /// Admitted (a pass to set if `set_pass`).
    Admitted(Box<Visit>),
    /// Still in line.
    Queued(Box<Waiting>),
    /// No valid place.
    Expired,
    /// Polled too often (`polls_per_minute`); the place is kept.
    Limited(Limited),
    /// Closed for maintenance.
    Maintenance,
    /// The store cannot answer.
    Unavailable,
}

/// What an open event stream learns at a heartbeat.
#[derive(Debug, Clone)]
pub enum Beat {
    /// Still in line.
    Queued(Box<Waiting>),
    /// A slot is held for them: their next status poll claims it.
    Turn,
    /// No valid place.
    Expired,
    /// Closed for maintenance.
    Maintenance,
    /// The store cannot answer (the stream stays; the next beat asks again).
    Unavailable,
    /// Over `polls_per_minute`: the store was not asked; the place is as
    /// last told.
    Limited,
}

/// What an admitted visitor looks like to this instance between touches.
struct Seen {
    info: SessionInfo,
    touched: AtomicU64,
}

/// Where a visitor stands, by the tokens they hold.
enum Standing {
    /// A valid pass of a live session, or a ticket whose turn came.
    Admitted(Box<Visit>),
    /// A valid ticket with a place in line.
    Queued(Box<Waiting>),
    /// No valid token with a place or a session behind it.
    Unknown,
    /// A ticket polled too often: not asked about, its place kept.
    Limited(Limited),
    /// The store could not say.
    Unavailable(StoreError),
}

/// Decides admissions for every sessions room.
pub struct Gate {
    /// Signs and verifies passes and tickets.
    pub tokens: Arc<Tokens>,
    store: Arc<dyn Store>,
    jwts: Arc<Vec<AppJwt>>,
    events: VisitorEvents,
    ticket_ttl: Duration,
    touch_interval: Duration,
    seen: Cache<u128, Arc<Seen>>,
}

impl Gate {
    /// A gate over a store, signing with `tokens` as `[tokens]` says.
    pub fn new(
        tokens: Arc<Tokens>,
        settings: &config::Tokens,
        store: Arc<dyn Store>,
        jwts: Arc<Vec<AppJwt>>,
        events: VisitorEvents,
        touch_interval: Duration,
    ) -> Gate {
        Gate {
            tokens,
            store,
            jwts,
            events,
            ticket_ttl: settings.ticket_ttl,
            touch_interval,
            seen: Cache::new(settings.cache_size),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Lifetime of a ticket.
    pub fn ticket_ttl(&self) -> Duration {
        self.ticket_ttl
    }

    /// Where the visitor events go.
    pub fn events(&self) -> &VisitorEvents {
        &self.events
    }

    fn lane(&self, w: &WaitingRoom, facts: &Facts<'_>) -> Lane {
        if bypass::matches(&w.config.priority, facts, &self.jwts) {
            Lane::Priority
        } else {
            Lane::Normal
        }
    }

    /// What this client's tokens are bound to in this room (`None`: the
    /// room binds nothing).
    fn binding(&self, w: &WaitingRoom, facts: &Facts<'_>) -> Option<String> {
        if w.config.bind == Bind::None {
            return None;
        }
        let user_agent = facts
            .req
            .headers
            .get(USER_AGENT)
            .map_or(&b""[..], |v| v.as_bytes());
        let network = facts.ip.map(|ip| clients::network(ip, &w.config.limits));
        clients::binding(&self.tokens, w.config.bind, user_agent, network.as_ref())
    }

    /// Whether a token may be used by this client: bound to it, or to
    /// nobody (issued before the room bound tokens, or after it stopped).
    fn bound(&self, w: &WaitingRoom, facts: &Facts<'_>, claims: &Claims) -> bool {
        let Some(bnd) = &claims.bnd else {
            return true;
        };
        self.binding(w, facts).is_none_or(|b| &b == bnd)
    }

    /// The session of a valid pass the request carries, for any room: whose
    /// turn a request of a `fair_by = "session"` room takes.
    pub fn pass_session(&self, facts: &Facts<'_>) -> Option<String> {
        pass_candidates(facts.req)
            .find_map(|(token, _)| self.tokens.verify_any_room(token, Kind::Pass))
            .map(|t| t.claims.sub.clone())
    }

    /// The visitor's valid pass for this room, if any.
    pub fn find_pass(
        &self,
        room: &str,
        w: &WaitingRoom,
        facts: &Facts<'_>,
    ) -> Option<(HeaderValue, Arc<Claims>, PassSource)> {
        pass_candidates(facts.req).find_map(|(token, source)| {
            let verified = self.tokens.verify(token, Kind::Pass, room)?;
            if !self.bound(w, facts, &verified.claims) {
                return None;
            }
            Some((verified.value?, verified.claims, source))
        })
    }

    /// The visitor's valid ticket for this room, if any.
    pub fn find_ticket(
        &self,
        room: &str,
        w: &WaitingRoom,
        facts: &Facts<'_>,
    ) -> Option<(String, Arc<Claims>)> {
        let req = facts.req;
        let header = req
            .headers
            .get(TICKET_HEADER)
            .and_then(cookies::header_text);
        header
            .into_iter()
            .chain(cookies::values(req, TICKET_COOKIE))
            .find_map(|token| {
                let verified = self.tokens.verify(token, Kind::Ticket, room)?;
                if !self.bound(w, facts, &verified.claims) {
                    return None;
                }
                Some((token.to_owned(), verified.claims))
            })
    }

    /// An admitted visitor's session, touching the store at most once per
    /// `touch_interval`. A store failure keeps a verified pass working.
    async fn session(&self, room: &str, claims: &Claims) -> Option<SessionInfo> {
        let id = SessionId::parse(&claims.sub)?;
        let now = now_millis();
        let interval = u64::try_from(self.touch_interval.as_millis()).unwrap_or(u64::MAX);
        if let Some(seen) = self.seen.get(&id.0) {
            if now.saturating_sub(seen.touched.load(Ordering::Relaxed)) < interval {
                return Some(seen.info.clone());
            }
        }
        let adopt = Adopt {
            admitted_at: claims.adm.unwrap_or(claims.iat * 1000),
            until: claims.exp * 1000,
        };
        match self.store.touch(room, id, Some(adopt)).await {
            Ok(Some(info)) => {
                self.seen.insert(
                    id.0,
                    Arc::new(Seen {
                        info: info.clone(),
                        touched: AtomicU64::new(now),
                    }),
                );
                Some(info)
            }
            Ok(None) => {
                self.seen.remove(&id.0);
                None
            }
            Err(e) => {
                tracing::warn!(room, error = %e, "store unavailable; honouring a verified pass");
                Some(self.seen.get(&id.0).map_or_else(
                    || SessionInfo {
                        id,
                        admitted_at: claims.iat * 1000,
                        wait_ms: 0,
                        utm: None,
                    },
                    |s| s.info.clone(),
                ))
            }
        }
    }

    /// A pass for a session: valid `session_ttl` from now, never past
    /// `session_max`, bound as the room binds.
    fn issue_pass(
        &self,
        room: &Room,
        w: &WaitingRoom,
        session: &SessionInfo,
        facts: &Facts<'_>,
    ) -> HeaderValue {
        let mut ttl = w.config.session_ttl;
        if let Some(max) = w.config.session_max {
            let end = session.admitted_at + u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
            ttl = ttl.min(Duration::from_millis(end.saturating_sub(now_millis())));
        }
        let mut claims =
            self.tokens
                .claims(Kind::Pass, room.name(), session.id.to_string(), None, ttl);
        claims.bnd = self.binding(w, facts);
        claims.adm = Some(session.admitted_at);
        // A signed token is base64url and dots: always a valid header value.
        HeaderValue::try_from(self.tokens.sign(&claims)).unwrap_or(HeaderValue::from_static(""))
    }

    /// A visitor the store has just admitted, at once or from the line
    /// (their events told by the caller).
    fn admitted(
        &self,
        room: &Room,
        w: &WaitingRoom,
        facts: &Facts<'_>,
        session: SessionInfo,
        ticket: Option<&str>,
    ) -> Box<Visit> {
        let from_line = ticket.is_some();
        let pass = self.issue_pass(room, w, &session, facts);
        Box::new(Visit {
            session,
            pass,
            source: None,
            set_pass: true,
            clear_ticket: from_line,
        })
    }

    /// A visitor in line, with their ticket: the one they sent, renewed
    /// past half its life; a new one dated by their arrival, so that the
    /// same place asked for again gets the same token.
    fn waiting(
        &self,
        room: &Room,
        w: &WaitingRoom,
        facts: &Facts<'_>,
        place: Place,
        ticket: Option<(String, &Claims)>,
    ) -> Box<Waiting> {
        let now = now_secs();
        let (ticket, set_ticket) = match ticket {
            // A ticket the store took back under a new id is given anew.
            Some((token, claims)) if !claims.needs_renewal(now) && claims.sub == place.ticket => {
                (token, false)
            }
            renewed => {
                let issued = if renewed.is_some() {
                    now
                } else {
                    place.joined / 1000
                };
                let mut claims = self
                    .tokens
                    .claims(
                        Kind::Ticket,
                        room.name(),
                        place.ticket.clone(),
                        Some(place.lane.as_str()),
                        self.ticket_ttl,
                    )
                    .dated(issued);
                claims.bnd = self.binding(w, facts);
                (self.tokens.sign(&claims), true)
            }
        };
        let challenge = match w.config.challenge {
            Some(_) if !place.confirmed => {
                Some(challenge::seed(&self.tokens, room.name(), &place.ticket))
            }
            _ => None,
        };
        Box::new(Waiting {
            place,
            ticket,
            set_ticket,
            challenge,
        })
    }

    /// Whether this poll confirms its ticket: always, unless the room asks
    /// for proof of work and the request carries no solution for this ticket.
    fn confirms(&self, room: &str, w: &WaitingRoom, facts: &Facts<'_>, ticket: &str) -> bool {
        let Some(pow) = w.config.challenge else {
            return true;
        };
        facts
            .req
            .headers
            .get(challenge::HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|nonce| {
                let seed = challenge::seed(&self.tokens, room, ticket);
                challenge::solves(&seed, nonce.trim(), pow.difficulty)
            })
    }

    /// Where the holder of these tokens stands: a pass first (renewed past
    /// half its life), then a ticket (a heartbeat that may be their turn).
    async fn standing(&self, room: &Room, w: &WaitingRoom, facts: &Facts<'_>) -> Standing {
        let name = room.name();
        if let Some((token, claims, source)) = self.find_pass(name, w, facts) {
            if let Some(session) = self.session(name, &claims).await {
                let renew = claims.needs_renewal(now_secs());
                let pass = if renew {
                    self.issue_pass(room, w, &session, facts)
                } else {
                    token
                };
                return Standing::Admitted(Box::new(Visit {
                    session,
                    pass,
                    source: Some(source),
                    set_pass: renew,
                    clear_ticket: false,
                }));
            }
        }
        let Some((token, claims)) = self.find_ticket(name, w, facts) else {
            return Standing::Unknown;
        };
        if let Err(limited) = w.limits.poll(&claims.sub) {
            room.counters().limited(limited.limit).inc();
            self.events.rate_limited(name, limited.limit.as_str());
            return Standing::Limited(limited);
        }
        let confirm = self.confirms(name, w, facts, &claims.sub);
        match self.store.poll(name, &claims.sub, confirm).await {
            Ok(Polled::Admitted(session)) => {
                self.events.admitted(name, &session, &claims.sub);
                Standing::Admitted(self.admitted(room, w, facts, session, Some(&claims.sub)))
            }
            // A poll claims: never a turn left unclaimed.
            Ok(Polled::Queued(place) | Polled::Turn(place)) => {
                Standing::Queued(self.waiting(room, w, facts, place, Some((token, &claims))))
            }
            Ok(Polled::Expired) => Standing::Unknown,
            Err(e) => Standing::Unavailable(e),
        }
    }

    /// A heartbeat of the visitor's open event stream: keeps their place
    /// like a status poll (the stream is their presence), and tells them
    /// when a slot is held for them, which their next status poll claims.
    /// A `counted` beat (one the visitor's clock asked for, not the store's
    /// turn) counts against the ticket's `polls_per_minute` as a poll does.
    pub async fn heartbeat(
        &self,
        room: &Room,
        w: &WaitingRoom,
        facts: &Facts<'_>,
        counted: bool,
    ) -> Beat {
        if w.state() == State::Maintenance {
            return Beat::Maintenance;
        }
        let name = room.name();
        let Some((token, claims)) = self.find_ticket(name, w, facts) else {
            return Beat::Expired;
        };
        if counted {
            if let Err(limited) = w.limits.poll(&claims.sub) {
                room.counters().limited(limited.limit).inc();
                return Beat::Limited;
            }
        }
        let confirm = self.confirms(name, w, facts, &claims.sub);
        match self.store.heartbeat(name, &claims.sub, confirm).await {
            Ok(Polled::Queued(place)) => {
                Beat::Queued(self.waiting(room, w, facts, place, Some((token, &claims))))
            }
            // Only a poll claims; a session from elsewhere is the poll's to tell.
            Ok(Polled::Turn(_) | Polled::Admitted(_)) => Beat::Turn,
            Ok(Polled::Expired) => Beat::Expired,
            Err(e) => {
                tracing::debug!(room = name, error = %e, "store unavailable for an event stream");
                Beat::Unavailable
            }
        }
    }

    /// Decides a request to a sessions room.
    pub async fn decide(&self, room: &Room, w: &WaitingRoom, facts: &Facts<'_>) -> Decision {
        if w.state() == State::Maintenance {
            return Decision::Maintenance;
        }
        match self.standing(room, w, facts).await {
            Standing::Admitted(mut visit) => {
                // Consent withdrawn since arrival: the campaign goes nowhere
                // with this request (upstream headers, conversions, logs).
                if !facts.attribution_consent {
                    visit.session.utm = None;
                }
                Decision::Admit(visit)
            }
            Standing::Queued(waiting) => Decision::Wait(waiting),
            Standing::Limited(limited) => Decision::Limited(limited),
            Standing::Unavailable(e) => self.unavailable(room, &e),
            Standing::Unknown => self.arrive(room, w, facts).await,
        }
    }

    /// `GET /__anteroom/status`: like `decide`, but never joins the line.
    pub async fn status(&self, room: &Room, w: &WaitingRoom, facts: &Facts<'_>) -> Status {
        if w.state() == State::Maintenance {
            return Status::Maintenance;
        }
        match self.standing(room, w, facts).await {
            Standing::Admitted(visit) => Status::Admitted(visit),
            Standing::Queued(waiting) => Status::Queued(waiting),
            Standing::Limited(limited) => Status::Limited(limited),
            Standing::Unknown => Status::Expired,
            Standing::Unavailable(e) => {
                tracing::warn!(room = room.name(), error = %e, "store unavailable for a status poll");
                Status::Unavailable
            }
        }
    }

    /// The arrival's `Idempotency-Key` as the store keeps it (a digest
    /// scoped to this client: `clients::idempotency_digest`): `Err` when one
    /// was sent that is not 1 to 255 visible ASCII characters.
    fn idempotency_key(
        &self,
        room: &str,
        w: &WaitingRoom,
        facts: &Facts<'_>,
        network: Option<&IpNet>,
    ) -> Result<Option<String>, &'static str> {
        let Some(value) = facts.req.headers.get(IDEMPOTENCY_HEADER) else {
            return Ok(None);
        };
        let key = value.as_bytes();
        if key.is_empty()
            || key.len() > MAX_IDEMPOTENCY_KEY
            || !key.iter().all(u8::is_ascii_graphic)
        {
            return Err("Idempotency-Key must be 1 to 255 visible ASCII characters.");
        }
        let binding = self.binding(w, facts);
        Ok(Some(clients::idempotency_digest(
            &self.tokens,
            room,
            key,
            network,
            binding.as_deref(),
        )))
    }

    async fn arrive(&self, room: &Room, w: &WaitingRoom, facts: &Facts<'_>) -> Decision {
        let name = room.name();
        let limits = &w.config.limits;
        let network = clients::network_of(facts.ip, facts.peer, limits);
        if network.is_none() && limits.unknown_clients == UnknownClients::Refuse {
            return Decision::UnknownClient;
        }
        let key = match self.idempotency_key(name, w, facts, network.as_ref()) {
            Ok(key) => key,
            Err(message) => return Decision::BadRequest(message),
        };
        if let Err(limited) = w.limits.arrival(network.as_ref()) {
            room.counters().limited(limited.limit).inc();
            self.events.rate_limited(name, limited.limit.as_str());
            return Decision::Limited(limited);
        }
        let lane = self.lane(w, facts);
        // Recorded only with the visitor's consent, when the site asks for it.
        let utm = Utm::from_query(facts.query).filter(|_| facts.attribution_consent);
        let newcomer = Newcomer {
            lane,
            utm,
            key,
            network: network
                .filter(|_| limits.tickets_per_client > 0)
                .map(|net| clients::network_digest(&self.tokens, name, &net)),
        };
        let arrival = match self.store.arrive(name, &newcomer).await {
            Ok(arrival) => arrival,
            Err(e) => return self.unavailable(room, &e),
        };
        let utm = newcomer.utm.as_ref();
        match arrival {
            Arrival::Admitted(session) => {
                self.events.let_in(name, lane, utm, &session);
                Decision::Admit(self.admitted(room, w, facts, session, None))
            }
            // The same arrival repeated with its `Idempotency-Key`: told once.
            Arrival::AdmittedAgain(session) => {
                Decision::Admit(self.admitted(room, w, facts, session, None))
            }
            Arrival::Queued(place) => {
                self.events.queued(name, &place, utm);
                Decision::Wait(self.waiting(room, w, facts, place, None))
            }
            Arrival::QueuedAgain(place) => {
                Decision::Wait(self.waiting(room, w, facts, place, None))
            }
            Arrival::Full => {
                room.counters().rejected_queue_full.inc();
                self.events.refused(name, "queue_full", utm);
                Decision::Full
            }
            Arrival::Limited => {
                let limited = Limited::tickets();
                room.counters().limited(limited.limit).inc();
                self.events.rate_limited(name, limited.limit.as_str());
                Decision::Limited(limited)
            }
            Arrival::Maintenance => {
                self.events.refused(name, "maintenance", utm);
                Decision::Maintenance
            }
        }
    }

    fn unavailable(&self, room: &Room, e: &StoreError) -> Decision {
        let name = room.name();
        if room.on_store_error() == OnStoreError::Open {
            tracing::warn!(room = name, error = %e, "store unavailable; letting the visitor through (on_store_error = open)");
            room.counters().store_open.inc();
            return Decision::Open;
        }
        tracing::warn!(room = name, error = %e, "store unavailable; asking new visitors to wait");
        room.counters().rejected_store.inc();
        Decision::Unavailable
    }

    /// The visitor came back with their pass (a browser's preload of the
    /// confirm endpoint): their place is confirmed in the store.
    pub async fn confirm(&self, room: &str, w: &WaitingRoom, facts: &Facts<'_>) {
        if let Some((_, claims, _)) = self.find_pass(room, w, facts) {
            self.session(room, &claims).await;
        }
    }

    /// Ends an admitted visitor's session at once (`/__anteroom/leave` or the
    /// app's `Anteroom-Command: release`); this instance stops honouring the pass.
    pub async fn release(
        &self,
        room: &str,
        session: SessionId,
        pass: &HeaderValue,
        how: &'static str,
    ) {
        self.seen.remove(&session.0);
        self.tokens.forget(pass.as_bytes());
        match self.store.release(room, session).await {
            Ok(Some(info)) => self.events.released(room, &info, how, now_millis()),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(room, error = %e, "could not release a session; it lapses with its pass")
            }
        }
    }

    /// Takes a waiting visitor out of the line.
    pub async fn leave_line(&self, room: &str, ticket: &str) -> bool {
        let Some(verified) = self.tokens.verify(ticket, Kind::Ticket, room) else {
            return false;
        };
        self.tokens.forget(ticket.as_bytes());
        let left = self
            .store
            .leave(room, &verified.claims.sub)
            .await
            .unwrap_or(false);
        if left {
            self.events.left(room, &verified.claims.sub);
        }
        left
    }

    /// Sweeps every sessions room and refreshes their local numbers.
    pub async fn sweep(&self, rooms: &Rooms) {
        for (room, w) in rooms.waiting_rooms() {
            let name = room.name();
            w.limits.tidy();
            match self.store.sweep(name).await {
                Ok(swept) => {
                    for s in &swept.sessions_expired {
                        self.seen.remove(&s.id.0);
                        self.events.session_expired(name, s);
                    }
                    for utm in &swept.tickets_expired {
                        self.events.ticket_expired(name, utm.as_ref());
                    }
                    self.events
                        .reservations_lapsed(name, swept.reservations_lapsed);
                    self.events.unconfirmed_lapsed(
                        name,
                        &swept.unconfirmed_sessions,
                        &swept.unconfirmed_tickets,
                    );
                }
                Err(e) => tracing::warn!(room = name, error = %e, "sweep failed"),
            }
            match self.store.snapshot(name).await {
                Ok(snapshot) => w.observe(snapshot),
                Err(e) => tracing::warn!(room = name, error = %e, "snapshot failed"),
            }
        }
    }
}

/// The passes a request may carry: header first, then cookies, then bearer.
fn pass_candidates(req: &pingora::http::RequestHeader) -> impl Iterator<Item = (&str, PassSource)> {
    let cookies = cookies::values(req, PASS_COOKIE).map(|t| (t, PassSource::Cookie));
    let header = req
        .headers
        .get(PASS_HEADER)
        .and_then(cookies::header_text)
        .map(|t| (t, PassSource::Header));
    let bearer = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(cookies::header_text)
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| (t.trim(), PassSource::Authorization));
    header.into_iter().chain(cookies).chain(bearer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SettingsPatch;
    use crate::testing::{Fixture, request};

    fn room(capacity: u32) -> Fixture {
        Fixture::new(
            &format!(
                "[[room]]\nname = \"web\"\nmode = \"sessions\"\ncapacity = {capacity}\n[room.priority]\npaths = [\"/vip\"]"
            ),
            "room = \"web\"",
        )
    }

    async fn decide(f: &Fixture, req: &pingora::http::RequestHeader) -> Decision {
        let (room, w) = f.waiting_room("web");
        f.gate.decide(room, w, &f.facts(req)).await
    }

    fn admitted(d: Decision) -> Box<Visit> {
        match d {
            Decision::Admit(v) => v,
            other => panic!("expected admission, got {other:?}"),
        }
    }

    fn waiting(d: Decision) -> Box<Waiting> {
        match d {
            Decision::Wait(w) => w,
            other => panic!("expected a place in line, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_newcomer_gets_a_pass_and_comes_back_with_it() {
        let f = room(1);
        let first = admitted(decide(&f, &request("GET", "/?utm_source=meta", &[])).await);
        assert!(first.set_pass && first.source.is_none() && !first.clear_ticket);
        assert_eq!(
            first.session.utm.as_ref().and_then(|u| u.source.as_deref()),
            Some("meta")
        );
        let pass = first.pass.to_str().unwrap();
        let cookie = format!("anteroom_pass={pass}");
        let bearer = format!("Bearer {pass}");
        for (header, source) in [
            (PASS_HEADER, PassSource::Header),
            ("cookie", PassSource::Cookie),
            ("authorization", PassSource::Authorization),
        ] {
            let value = match source {
                PassSource::Header => pass,
                PassSource::Cookie => &cookie,
                PassSource::Authorization => &bearer,
            };
            let again = admitted(decide(&f, &request("GET", "/", &[(header, value)])).await);
            assert_eq!(again.session.id, first.session.id);
            assert_eq!(again.source, Some(source));
            assert!(!again.set_pass, "a fresh pass is not renewed");
        }
        assert_eq!(f.store.snapshot("web").await.unwrap().sessions, 1);
    }

    #[tokio::test]
    async fn a_full_room_queues_and_a_ticket_keeps_the_place() {
        let f = room(1);
        admitted(decide(&f, &request("GET", "/", &[])).await);
        let first = waiting(decide(&f, &request("GET", "/", &[])).await);
        assert!(first.set_ticket);
        assert_eq!(first.place.position(), 1);
        let with_first = request("GET", "/", &[(TICKET_HEADER, first.ticket.as_str())]);
        // Back with the ticket: it counts now, and keeps its place.
        let again = waiting(decide(&f, &with_first).await);
        assert_eq!(again.place.position(), 1, "a refresh keeps the place");
        assert!(!again.set_ticket, "a fresh ticket is not renewed");
        let second = waiting(decide(&f, &request("GET", "/", &[])).await);
        assert_eq!(second.place.position(), 2);
        let with_second = request("GET", "/", &[(TICKET_HEADER, second.ticket.as_str())]);
        waiting(decide(&f, &with_second).await);
        assert_eq!(f.store.snapshot("web").await.unwrap().queue_length(), 2);
    }

    #[tokio::test]
    async fn forged_and_foreign_tokens_count_as_none() {
        let f = room(1);
        let inside = admitted(decide(&f, &request("GET", "/", &[])).await);
        let pass = inside.pass.to_str().unwrap().to_owned();
        // One character of the signature changed, well inside it.
        let at = pass.len() - 20;
        let flipped = if &pass[at..=at] == "A" { "B" } else { "A" };
        let tampered = format!("{}{flipped}{}", &pass[..at], &pass[at + 1..]);
        let foreign = f.gate.tokens.sign(&f.gate.tokens.claims(
            Kind::Pass,
            "other",
            inside.session.id.to_string(),
            None,
            Duration::from_secs(60),
        ));
        for token in [tampered.as_str(), foreign.as_str(), "garbage", ""] {
            let d = decide(&f, &request("GET", "/", &[(PASS_HEADER, token)])).await;
            let w = waiting(d);
            assert!(w.set_ticket, "{token:?} was taken for a pass");
        }
    }

    #[tokio::test]
    async fn the_priority_rule_picks_the_lane() {
        let f = room(1);
        admitted(decide(&f, &request("GET", "/", &[])).await);
        let normal = waiting(decide(&f, &request("GET", "/", &[])).await);
        let vip = waiting(decide(&f, &request("GET", "/vip/offer", &[])).await);
        assert_eq!(normal.place.lane, Lane::Normal);
        assert_eq!(vip.place.lane, Lane::Priority);
        assert_eq!(vip.place.position(), 1, "ahead of the normal lane");
    }

    #[tokio::test]
    async fn status_never_joins_the_line() {
        let f = room(1);
        let (room, w) = f.waiting_room("web");
        let inside = admitted(decide(&f, &request("GET", "/", &[])).await);
        assert!(matches!(
            f.gate
                .status(room, w, &f.facts(&request("GET", "/", &[])))
                .await,
            Status::Expired
        ));
        assert_eq!(f.store.snapshot("web").await.unwrap().queue_length(), 0);
        let queued = waiting(decide(&f, &request("GET", "/", &[])).await);
        let with_ticket = request("GET", "/", &[(TICKET_HEADER, queued.ticket.as_str())]);
        assert!(matches!(
            f.gate.status(room, w, &f.facts(&with_ticket)).await,
            Status::Queued(_)
        ));
        // The visitor inside leaves: the next poll lets the waiting one in.
        f.gate
            .release("web", inside.session.id, &inside.pass, "leave")
            .await;
        let Status::Admitted(visit) = f.gate.status(room, w, &f.facts(&with_ticket)).await else {
            panic!("not admitted after the slot freed")
        };
        assert!(visit.set_pass && visit.clear_ticket);
        // The released pass is no longer honoured.
        let old = request("GET", "/", &[(PASS_HEADER, inside.pass.to_str().unwrap())]);
        assert!(f.gate.find_pass("web", w, &f.facts(&old)).is_none());
    }

    #[tokio::test]
    async fn maintenance_and_a_full_line_are_told_apart() {
        let f = Fixture::new(
            "[[room]]\nname = \"web\"\nmode = \"sessions\"\ncapacity = 1\nmax_queue = 1",
            "room = \"web\"",
        );
        admitted(decide(&f, &request("GET", "/", &[])).await);
        let queued = waiting(decide(&f, &request("GET", "/", &[])).await);
        let back = request("GET", "/", &[(TICKET_HEADER, queued.ticket.as_str())]);
        waiting(decide(&f, &back).await);
        assert!(matches!(
            decide(&f, &request("GET", "/", &[])).await,
            Decision::Full
        ));
        let (room, w) = f.waiting_room("web");
        assert_eq!(room.counters().rejected_queue_full.get(), 1);
        let patch = SettingsPatch {
            state: Some(State::Maintenance),
            ..SettingsPatch::default()
        };
        w.observe(f.store.update("web", patch).await.unwrap());
        assert!(matches!(
            decide(&f, &request("GET", "/", &[])).await,
            Decision::Maintenance
        ));
    }
}
