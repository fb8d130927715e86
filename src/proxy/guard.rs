//! What a request holds of its room while it is proxied, by the room's
//! kind: a `requests` room's slot, turn and token reservation
//! ([`InFlight`]), or a `sessions` room's visit ([`Visiting`]). Each kind
//! carries out its part of the request's life: the decision on entry, the
//! upstream's answer, the body going by, and the end. The proxy's hooks
//! only hand each event to the guard the request holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{LINK, SET_COOKIE};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType};

use crate::bypass;
use crate::config::Route;
use crate::gate::{Decision, Gate, Visit};
use crate::limits::adaptive::BodyHint;
use crate::limits::fair::Turn;
use crate::limits::slots::Held;
use crate::limits::token_usage::TokenUsage;
use crate::page::PageState;
use crate::proxy::answers::{self, CookieJar};
use crate::proxy::site::Site;
use crate::proxy::traffic::Outcome;
use crate::request::facts::Facts;
use crate::requests::{self, Admission, Answer, Retries};
use crate::response::Reply;
use crate::room::{Kind, Limiters, Room, WaitingRoom};

/// The response header through which the app ends a visitor's session.
const COMMAND_HEADER: &str = "anteroom-command";

/// What a request holds of its room.
#[derive(Default)]
pub enum Guard {
    /// No room guards it, or it passed without one (bypass, a store down
    /// with `on_store_error = "open"`).
    #[default]
    Unguarded,
    /// A request of a `requests` room.
    Requests(InFlight),
    /// A visitor of a `sessions` room.
    Sessions(Visiting),
}

/// A request of a `requests` room.
pub struct InFlight {
    room: Arc<Room>,
    /// Its slot, while it holds one (given back on a held `429`).
    slot: Option<Held>,
    /// Its turn in the room's line.
    turn: Turn,
    /// How long it waited for its slot.
    waited: Duration,
    /// When its `max_wait` ends.
    deadline: Instant,
    /// For a room with a token budget: what was reserved, and the usage the
    /// response reports as it streams by.
    tokens: Option<(u32, TokenUsage)>,
    /// An upstream `429` being retried: when to send again, and how often
    /// it was sent again already.
    retry_at: Option<Instant>,
    retries: u32,
    /// The request could not be sent again in time: `503 QUEUE_REQUIRED`
    /// with this retry time instead of the upstream's `429`.
    requeue: Option<Duration>,
    /// A `429` of an adaptive room whose hint is in its body.
    body_hint: Option<BodyHint>,
}

/// A visitor of a `sessions` room, let in.
pub struct Visiting {
    room: Arc<Room>,
    visit: Box<Visit>,
    /// Let in on arrival: the answer asks the browser to confirm its place.
    confirm: bool,
}

/// The room's decision on a request of a guarded route.
pub struct Entry {
    /// What the request holds from now on.
    pub guard: Guard,
    /// anteroom's own answer, or `None` to forward the request.
    pub answer: Option<(Reply, Outcome)>,
    /// It passed without taking a place (bypass, or the room let it through).
    pub bypassed: bool,
}

impl Entry {
    fn forward(guard: Guard) -> Entry {
        Entry {
            guard,
            answer: None,
            bypassed: false,
        }
    }

    fn answer(reply: Reply, outcome: Outcome) -> Entry {
        Entry {
            guard: Guard::Unguarded,
            answer: Some((reply, outcome)),
            bypassed: false,
        }
    }

    fn bypass() -> Entry {
        Entry {
            guard: Guard::Unguarded,
            answer: None,
            bypassed: true,
        }
    }
}

/// The decision of `room` (guarding `route`) on a request that started at
/// `started`: bypass, the room kind's admission, or its answer.
pub async fn enter(
    site: &Site,
    route: &Route,
    room: Arc<Room>,
    facts: &Facts<'_>,
    started: Instant,
) -> Entry {
    if bypass::matches(&route.bypass, facts, &site.jwts)
        || bypass::matches(room.bypass(), facts, &site.jwts)
    {
        return Entry::bypass();
    }
    match room.kind() {
        Kind::Requests(limits) => InFlight::enter(site, &room, limits, facts, started).await,
        Kind::Sessions(w) => match &site.gate {
            Some(gate) => Visiting::enter(gate, &room, w, facts).await,
            // Not reached: a config with sessions rooms has `[tokens]`.
            None => Entry::forward(Guard::Unguarded),
        },
    }
}

impl Guard {
    /// The visit, for a visitor of a `sessions` room.
    pub fn visit(&self) -> Option<&Visit> {
        match self {
            Guard::Sessions(v) => Some(&v.visit),
            _ => None,
        }
    }

    /// How long the request waited for a slot (`requests` rooms).
    pub fn slot_wait(&self) -> Option<Duration> {
        match self {
            Guard::Requests(r) => Some(r.waited),
            _ => None,
        }
    }

    /// Whether an upstream `429` is being held to be sent again.
    pub fn retrying(&self) -> bool {
        matches!(self, Guard::Requests(r) if r.retry_at.is_some())
    }

    /// The request's `requests` room state, if that is its kind.
    pub fn in_flight(&mut self) -> Option<&mut InFlight> {
        match self {
            Guard::Requests(r) => Some(r),
            _ => None,
        }
    }

    /// The upstream's response header is in: a visitor's cookies (and the
    /// app's `anteroom-command: release`, which never reaches the client).
    pub async fn respond(
        &self,
        gate: Option<&Gate>,
        response: &mut ResponseHeader,
        secure: bool,
    ) -> pingora::Result<()> {
        // Only an upstream response can carry the command.
        let release = response
            .remove_header(COMMAND_HEADER)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"release"));
        match (self, gate) {
            (Guard::Sessions(v), Some(gate)) => v.respond(gate, response, release, secure).await,
            _ => Ok(()),
        }
    }

    /// A piece of the response body went by.
    pub fn body(&mut self, chunk: Option<&bytes::Bytes>, end: bool) {
        if let Guard::Requests(r) = self {
            r.body(chunk, end);
        }
    }

    /// The request is over, with `status` sent: its slot goes back, its
    /// tokens are settled, a visitor's conversion is counted.
    pub async fn end(
        &mut self,
        gate: Option<&Gate>,
        outcome: Outcome,
        method: &http::Method,
        path: &str,
        status: u16,
    ) {
        match self {
            Guard::Unguarded => {}
            Guard::Requests(r) => r.end(outcome).await,
            Guard::Sessions(v) => {
                if let (Kind::Sessions(w), Some(gate)) = (v.room.kind(), gate) {
                    if w.converts(method, path, status) {
                        gate.events().converted(v.room.name(), &v.visit.session);
                    }
                }
            }
        }
    }
}

impl InFlight {
    async fn enter(
        site: &Site,
        room: &Arc<Room>,
        limits: &Limiters,
        facts: &Facts<'_>,
        started: Instant,
    ) -> Entry {
        let turn = requests::turn(limits.fairness(), facts, &site.jwts, || {
            site.gate.as_ref()?.pass_session(facts)
        });
        let decided = requests::admit(room, limits, turn).await;
        let slot = match decided.admission {
            Admission::Admitted(slot) => Some(slot),
            // The store is down and the room lets newcomers through.
            Admission::Open => None,
            Admission::Refused(retry) => {
                return Entry::answer(
                    answers::queue_required(room.name(), retry),
                    Outcome::QueueRequired,
                );
            }
        };
        Entry::forward(Guard::Requests(InFlight {
            room: Arc::clone(room),
            slot,
            turn,
            waited: decided.waited,
            deadline: started + limits.max_wait(),
            tokens: decided
                .charged
                .map(|c| (c, TokenUsage::new(limits.usage_keys()))),
            retry_at: None,
            retries: 0,
            requeue: None,
            body_hint: None,
        }))
    }

    fn limits(&self) -> Option<&Limiters> {
        match self.room.kind() {
            Kind::Requests(l) => Some(l),
            Kind::Sessions(_) => None,
        }
    }

    /// What is left of its `max_wait`.
    fn left(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }

    /// Before connecting upstream: a held `429` waits out its delay and
    /// takes a slot again in turn, or ends as the room's `503`.
    pub async fn before_sending(&mut self) -> pingora::Result<()> {
        let Some(at) = self.retry_at.take() else {
            return Ok(());
        };
        tokio::time::sleep_until(at.into()).await;
        let left = self.left(Instant::now());
        let Some(limits) = self.limits() else {
            return Ok(());
        };
        match requests::readmit(&self.room, limits, self.turn, left).await {
            Ok(held) => {
                self.slot = Some(held);
                Ok(())
            }
            Err(retry) => {
                self.requeue = Some(retry);
                Err(Error::explain(
                    ErrorType::HTTPStatus(503),
                    "no slot for a retry within max_wait",
                ))
            }
        }
    }

    /// The upstream answered `status`: the room's limits learn from it, and
    /// a `429` may be held for another try (an `Err` Pingora retries) or
    /// turned into the room's `503`.
    pub fn answered(
        &mut self,
        route: &Route,
        body_replayable: bool,
        response: &ResponseHeader,
        sent: Instant,
    ) -> pingora::Result<()> {
        let now = Instant::now();
        let retries = Retries {
            allowed: route.retry_429 && self.slot.is_some() && body_replayable,
            done: self.retries,
            left: self.left(now),
        };
        let Some(limits) = self.limits() else {
            return Ok(());
        };
        let status = response.status.as_u16();
        match requests::answered(&self.room, limits, status, &response.headers, sent, retries) {
            Answer::Retry(delay) => {
                // Its slot goes to the next in line meanwhile.
                self.slot = None;
                self.retry_at = Some(now + delay);
                self.requeue = Some(delay);
                self.retries += 1;
                let mut e = Error::explain(
                    ErrorType::HTTPStatus(429),
                    "the upstream answered 429; the request is sent again",
                );
                e.set_retry(true);
                Err(e)
            }
            Answer::Requeue(retry) => {
                self.requeue = Some(retry);
                let mut e = Error::explain(
                    ErrorType::HTTPStatus(429),
                    "the upstream answered 429 with a hint past max_wait",
                );
                e.set_retry(false);
                Err(e)
            }
            Answer::PassReadingHint => {
                self.body_hint = Some(BodyHint::default());
                Ok(())
            }
            Answer::Pass => Ok(()),
        }
    }

    /// The room's `503` for a held `429` that could not be sent again in
    /// time, never the upstream's bare `429`.
    pub fn requeued(&self, e: &Error) -> Option<Reply> {
        match (e.etype(), self.requeue) {
            (ErrorType::HTTPStatus(429 | 503), Some(retry)) => {
                Some(answers::queue_required(self.room.name(), retry))
            }
            _ => None,
        }
    }

    fn body(&mut self, chunk: Option<&bytes::Bytes>, end: bool) {
        if let (Some((_, usage)), Some(chunk)) = (&mut self.tokens, chunk) {
            usage.feed(chunk);
        }
        let Some(hint) = &mut self.body_hint else {
            return;
        };
        if let Some(chunk) = chunk {
            hint.feed(chunk);
        }
        if end {
            let delay = hint.delay();
            self.body_hint = None;
            if let (Some(delay), Some(adaptive)) = (delay, self.room.adaptive()) {
                adaptive.pause(delay, Instant::now());
            }
        }
    }

    async fn end(&mut self, outcome: Outcome) {
        // Its slot goes back now, whatever happened.
        drop(self.slot.take());
        let Some((reserved, usage)) = self.tokens.take() else {
            return;
        };
        // Once, whatever way the request ended: what the response reported,
        // or the estimate when it reported nothing.
        let used = if outcome == Outcome::QueueRequired {
            // A held 429 that ended as the room's 503: never processed.
            0
        } else {
            usage.total().unwrap_or(u64::from(reserved))
        };
        if let Some(budget) = self.limits().and_then(Limiters::budget) {
            budget.settle(reserved, used).await;
        }
        let class = usize::from(self.turn.weight > 1);
        self.room.counters().tokens[class].inc_by(used);
    }
}

impl Visiting {
    async fn enter(gate: &Gate, room: &Arc<Room>, w: &WaitingRoom, facts: &Facts<'_>) -> Entry {
        let closed = |state| answers::closed(room, w, state, facts);
        let counters = room.counters();
        match gate.decide(room, w, facts).await {
            Decision::Admit(visit) => {
                counters.admitted.inc();
                // The pass cookie reaches the confirm endpoint only from the root.
                let confirm =
                    visit.on_arrival() && facts.wants_html() && w.config.cookie_path == "/";
                Entry::forward(Guard::Sessions(Visiting {
                    room: Arc::clone(room),
                    visit,
                    confirm,
                }))
            }
            Decision::Wait(waiting) => {
                counters.queued.inc();
                let jar = CookieJar::new(w, gate.ticket_ttl(), facts.secure);
                let back = facts.target();
                let reply = answers::waiting(room, w, &waiting, facts, &jar, &back);
                Entry::answer(reply, Outcome::QueueRequired)
            }
            Decision::Full => {
                counters.rejected_queue_full.inc();
                Entry::answer(closed(PageState::Full), Outcome::Closed)
            }
            Decision::Limited(limited) => {
                Entry::answer(answers::limited(room, w, &limited, facts), Outcome::Limited)
            }
            Decision::BadRequest(message) => {
                Entry::answer(Reply::error(400, "BAD_REQUEST", message), Outcome::Refused)
            }
            Decision::UnknownClient => Entry::answer(
                Reply::error(
                    403,
                    "UNKNOWN_CLIENT",
                    "The proxy in front named no client address; this room admits only known clients.",
                ),
                Outcome::Refused,
            ),
            Decision::Maintenance => {
                counters.rejected_closed.inc();
                Entry::answer(closed(PageState::Maintenance), Outcome::Closed)
            }
            // Counted by the gate, which logs why.
            Decision::Unavailable => {
                Entry::answer(closed(PageState::Unavailable), Outcome::QueueRequired)
            }
            Decision::Open => Entry::bypass(),
        }
    }

    async fn respond(
        &self,
        gate: &Gate,
        response: &mut ResponseHeader,
        release: bool,
        secure: bool,
    ) -> pingora::Result<()> {
        let Kind::Sessions(w) = self.room.kind() else {
            return Ok(());
        };
        let visit = &self.visit;
        if release {
            gate.release(self.room.name(), visit.session.id, &visit.pass, "command")
                .await;
        }
        let jar = CookieJar::new(w, gate.ticket_ttl(), secure);
        for cookie in jar.for_visit(visit, release) {
            response.append_header(SET_COOKIE, cookie)?;
        }
        if self.confirm && !release {
            // The browser fetches it at once, with the pass cookie just set:
            // its place is confirmed without waiting for its next click.
            response.append_header(LINK, answers::confirm_link(&self.room))?;
        }
        Ok(())
    }
}
