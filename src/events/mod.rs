//! A visitor's journey through a sessions room: arrived, queued, admitted,
//! converted, released, expired, left, refused, rate limited; and an
//! operator's changes to a room. Every event is written here, once: one
//! `anteroom::visitor` log line, its counters, and, with `[[events.sink]]`s,
//! one event on the bus.

pub mod bus;
pub mod event;
pub mod sinks;

use std::cell::Cell;
use std::sync::Arc;

use prometheus::{HistogramVec, IntCounterVec, Registry};

use crate::attribution::{Labels, Utm};
use crate::config::Attribution;
use crate::events::bus::Bus;
use crate::events::event::{Batch, Change, Fields, Hex16, Kind};
use crate::metrics;
use crate::queue::Lane;
use crate::store::{Place, SessionId, SessionInfo};

const QUEUE_WAIT_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// Where visitor events go. Cloning shares the counters.
#[derive(Clone)]
pub struct VisitorEvents {
    bus: Arc<Bus>,
    instance: Arc<str>,
    labels: Labels,
    arrivals: IntCounterVec,
    admissions: IntCounterVec,
    released: IntCounterVec,
    expirations: IntCounterVec,
    queue_wait: HistogramVec,
    conversions: IntCounterVec,
}

/// The fields of one event line; absent ones are left out of the line.
#[derive(Default)]
struct Line<'a> {
    lane: Option<&'static str>,
    session: Option<SessionId>,
    position: Option<u32>,
    wait_ms: Option<u64>,
    visit_ms: Option<u64>,
    how: Option<&'static str>,
    kind: Option<&'static str>,
    utm: Option<&'a Utm>,
}

fn write(event: &'static str, room: &str, line: Line<'_>) {
    let utm = line.utm;
    tracing::info!(
        target: "anteroom::visitor",
        event,
        room,
        lane = line.lane,
        kind = line.kind,
        session = line.session.map(tracing::field::display),
        position = line.position,
        wait_ms = line.wait_ms,
        visit_ms = line.visit_ms,
        how = line.how,
        utm_source = utm.and_then(|u| u.source.as_deref()),
        utm_medium = utm.and_then(|u| u.medium.as_deref()),
        utm_campaign = utm.and_then(|u| u.campaign.as_deref()),
    );
}

impl VisitorEvents {
    /// Registers the visitor counters; campaigns are counted by the names
    /// `[attribution]` lists.
    pub fn register(
        registry: &Registry,
        attribution: &Attribution,
        bus: Arc<Bus>,
        instance: &str,
    ) -> Result<VisitorEvents, prometheus::Error> {
        Ok(VisitorEvents {
            bus,
            instance: Arc::from(instance),
            labels: Labels::new(attribution),
            arrivals: metrics::counter(
                registry,
                "visitors_arrived_total",
                "New visitors at a sessions room, by lane.",
                &["room", "lane"],
            )?,
            admissions: metrics::counter(
                registry,
                "visitors_admitted_total",
                "Visitors admitted to a sessions room, at once (direct) or from the line (queue).",
                &["room", "how"],
            )?,
            released: metrics::counter(
                registry,
                "visitors_released_total",
                "Sessions ended by the visitor (leave) or the app (command).",
                &["room", "how"],
            )?,
            expirations: metrics::counter(
                registry,
                "visitors_expired_total",
                "Sessions, tickets and reservations that lapsed.",
                &["room", "kind"],
            )?,
            queue_wait: metrics::histogram(
                registry,
                "visitors_queue_wait_seconds",
                "Time from joining the line to admission.",
                &["room"],
                QUEUE_WAIT_BUCKETS,
            )?,
            conversions: metrics::counter(
                registry,
                "visitors_converted_total",
                "Conversions, by campaign (values outside [attribution] count as other).",
                &["room", "utm_source", "utm_campaign"],
            )?,
        })
    }

    /// The same counters, with campaigns labelled as a reloaded
    /// `[attribution]` says.
    pub fn relabeled(&self, attribution: &Attribution) -> VisitorEvents {
        VisitorEvents {
            labels: Labels::new(attribution),
            ..self.clone()
        }
    }

    /// Makes every series of a sessions room exist, at 0, before its first
    /// event: `increase()` then sees the first events, and dashboards show 0
    /// rather than nothing.
    pub fn prepare(&self, room: &str) {
        for lane in Lane::ALL {
            self.arrivals.with_label_values(&[room, lane.as_str()]);
        }
        for how in ["direct", "queue"] {
            self.admissions.with_label_values(&[room, how]);
        }
        for how in ["leave", "command"] {
            self.released.with_label_values(&[room, how]);
        }
        for kind in [
            "session",
            "ticket",
            "reservation",
            "unconfirmed_session",
            "unconfirmed_ticket",
        ] {
            self.expirations.with_label_values(&[room, kind]);
        }
        self.queue_wait.with_label_values(&[room]);
        self.conversions.with_label_values(&[room, "none", "none"]);
    }

    /// Puts the events `write` adds on the bus, together, when any sink
    /// is configured (they are not even written otherwise).
    fn publish_with(&self, write: impl FnOnce(&mut Batch)) {
        thread_local! {
            /// Where a request's events are written before the bus copies
            /// them into each sink's buffer: memory kept from one request
            /// to the next.
            static DRAFT: Cell<Batch> = Cell::new(Batch::default());
        }
        if !self.bus.is_active() {
            return;
        }
        let mut draft = DRAFT.take();
        draft.clear();
        write(&mut draft);
        self.bus.publish(&draft);
        DRAFT.set(draft);
    }

    /// Puts one event on the bus, when any sink is configured.
    fn publish(&self, kind: Kind, room: &str, fields: Fields<'_>) {
        self.publish_with(|events| self.push(events, kind, room, fields));
    }

    fn push(&self, events: &mut Batch, kind: Kind, room: &str, fields: Fields<'_>) {
        events.push(kind, room, &self.instance, &fields);
    }

    /// A new visitor let in at once: `arrived`, then `admitted`, their
    /// session as their journey, on the bus together.
    pub fn let_in(&self, room: &str, lane: Lane, utm: Option<&Arc<Utm>>, session: &SessionInfo) {
        self.arrived(room, lane, utm);
        self.count_admission(room, session, false);
        self.publish_with(|events| {
            let journey = opaque(Of::Journey, room, &session.id.0.to_be_bytes());
            self.arrival(events, room, lane, utm, &journey);
            self.admission(events, room, session, false, &journey);
        });
    }

    /// A new visitor joined the line: `arrived`, then `queued`, one
    /// journey id for both, on the bus together.
    pub fn queued(&self, room: &str, place: &Place, utm: Option<&Arc<Utm>>) {
        self.arrived(room, place.lane, utm);
        let line = Line {
            lane: Some(place.lane.as_str()),
            position: Some(place.position()),
            wait_ms: Some(place.wait.ms),
            utm: utm.map(|u| &**u),
            ..Line::default()
        };
        write("queued", room, line);
        self.publish_with(|events| {
            let journey = opaque(Of::Journey, room, place.ticket.as_bytes());
            self.arrival(events, room, place.lane, utm, &journey);
            let fields = Fields {
                journey: Some(journey.as_str()),
                lane: Some(place.lane.as_str()),
                position: Some(place.position()),
                wait_ms: place.wait.told(),
                attribution: utm.map(|u| &**u),
                ..Fields::default()
            };
            self.push(events, Kind::Queued, room, fields);
        });
    }

    /// A new visitor at the room: counted and logged.
    fn arrived(&self, room: &str, lane: Lane, utm: Option<&Arc<Utm>>) {
        self.arrivals
            .with_label_values(&[room, lane.as_str()])
            .inc();
        let line = Line {
            lane: Some(lane.as_str()),
            utm: utm.map(|u| &**u),
            ..Line::default()
        };
        write("arrived", room, line);
    }

    /// The `arrived` event of a visitor on `journey`.
    fn arrival(
        &self,
        events: &mut Batch,
        room: &str,
        lane: Lane,
        utm: Option<&Arc<Utm>>,
        journey: &Hex16,
    ) {
        let fields = Fields {
            journey: Some(journey.as_str()),
            lane: Some(lane.as_str()),
            attribution: utm.map(|u| &**u),
            ..Fields::default()
        };
        self.push(events, Kind::Arrived, room, fields);
    }

    /// A visitor was let in from the line, with the `ticket` they waited
    /// with.
    pub fn admitted(&self, room: &str, session: &SessionInfo, ticket: &str) {
        self.count_admission(room, session, true);
        self.publish_with(|events| {
            let journey = opaque(Of::Journey, room, ticket.as_bytes());
            self.admission(events, room, session, true, &journey);
        });
    }

    /// An admission, at once or `from_line`: counted and logged.
    fn count_admission(&self, room: &str, session: &SessionInfo, from_line: bool) {
        self.admissions
            .with_label_values(&[room, how(from_line)])
            .inc();
        if from_line {
            self.queue_wait
                .with_label_values(&[room])
                .observe(session.wait_ms as f64 / 1000.0);
        }
        let line = Line {
            session: Some(session.id),
            wait_ms: Some(session.wait_ms),
            utm: session.utm.as_deref(),
            ..Line::default()
        };
        write("admitted", room, line);
    }

    /// The `admitted` event of a visitor on `journey`, at once or
    /// `from_line`.
    fn admission(
        &self,
        events: &mut Batch,
        room: &str,
        session: &SessionInfo,
        from_line: bool,
        journey: &Hex16,
    ) {
        let digest = opaque_session(room, session.id);
        let fields = Fields {
            journey: Some(journey.as_str()),
            session: Some(digest.as_str()),
            how: Some(how(from_line)),
            wait_ms: Some(session.wait_ms),
            attribution: session.utm.as_deref(),
            ..Fields::default()
        };
        self.push(events, Kind::Admitted, room, fields);
    }

    /// A waiting visitor left the line.
    pub fn left(&self, room: &str, ticket: &str) {
        write("left", room, Line::default());
        self.publish_with(|events| {
            let journey = opaque(Of::Journey, room, ticket.as_bytes());
            let fields = Fields {
                journey: Some(journey.as_str()),
                ..Fields::default()
            };
            self.push(events, Kind::Left, room, fields);
        });
    }

    /// A newcomer was turned away (`queue_full`, `maintenance`,
    /// `store_unavailable`).
    pub fn refused(&self, room: &str, reason: &'static str, utm: Option<&Arc<Utm>>) {
        self.publish(
            Kind::Refused,
            room,
            Fields {
                reason: Some(reason),
                attribution: utm.map(|u| &**u),
                ..Fields::default()
            },
        );
    }

    /// A request was over one of the room's per-client limits.
    pub fn rate_limited(&self, room: &str, limit: &'static str) {
        self.publish(
            Kind::RateLimited,
            room,
            Fields {
                reason: Some(limit),
                ..Fields::default()
            },
        );
    }

    /// An operator changed a room (the admin API).
    pub fn room_changed(&self, room: &str, change: Change) {
        tracing::info!(target: "anteroom::visitor", event = "room_changed", room, state = change.state.as_deref(), capacity = change.capacity, admit_rate = change.admit_rate);
        self.publish(
            Kind::RoomChanged,
            room,
            Fields {
                change: Some(&change),
                ..Fields::default()
            },
        );
    }

    /// Whether the sinks report healthy, by sink.
    pub fn sinks(&self) -> Vec<(String, bool)> {
        self.bus.healthy()
    }

    /// An admitted visitor did what the room counts as a conversion.
    pub fn converted(&self, room: &str, session: &SessionInfo) {
        let utm = session.utm.as_deref();
        let (source, campaign) = self.labels.of(utm);
        self.conversions
            .with_label_values(&[room, source, campaign])
            .inc();
        let line = Line {
            session: Some(session.id),
            wait_ms: Some(session.wait_ms),
            utm,
            ..Line::default()
        };
        write("converted", room, line);
        self.publish_with(|events| {
            let digest = opaque_session(room, session.id);
            let fields = Fields {
                session: Some(digest.as_str()),
                wait_ms: Some(session.wait_ms),
                attribution: session.utm.as_deref(),
                ..Fields::default()
            };
            self.push(events, Kind::Converted, room, fields);
        });
    }

    /// A session ended at once: the visitor left (`leave`) or the app said so (`command`).
    pub fn released(&self, room: &str, session: &SessionInfo, how: &'static str, now_ms: u64) {
        self.released.with_label_values(&[room, how]).inc();
        let line = Line {
            session: Some(session.id),
            how: Some(how),
            visit_ms: Some(now_ms.saturating_sub(session.admitted_at)),
            utm: session.utm.as_deref(),
            ..Line::default()
        };
        write("released", room, line);
        self.publish_with(|events| {
            let digest = opaque_session(room, session.id);
            let fields = Fields {
                session: Some(digest.as_str()),
                how: Some(how),
                visit_ms: Some(now_ms.saturating_sub(session.admitted_at)),
                attribution: session.utm.as_deref(),
                ..Fields::default()
            };
            self.push(events, Kind::Released, room, fields);
        });
    }

    /// A session's pass lapsed.
    pub fn session_expired(&self, room: &str, session: &SessionInfo) {
        self.expired(room, "session", Some(session.id), session.utm.as_ref());
    }

    /// A ticket was forgotten after `rejoin_grace` of silence.
    pub fn ticket_expired(&self, room: &str, utm: Option<&Arc<Utm>>) {
        self.expired(room, "ticket", None, utm);
    }

    /// Reservations the head of the line did not claim in time.
    pub fn reservations_lapsed(&self, room: &str, count: u32) {
        self.expirations
            .with_label_values(&[room, "reservation"])
            .inc_by(u64::from(count));
    }

    /// Places of visitors who never came back with their token (clients
    /// that keep none): counted, and an `unconfirmed` event on each journey,
    /// so that the funnel leaves them out (they arrived, and were queued or
    /// let in, but were never visitors). Not logged one by one, as a flood
    /// makes many.
    pub fn unconfirmed_lapsed(&self, room: &str, sessions: &[SessionId], tickets: &[String]) {
        for (kind, count) in [
            ("unconfirmed_session", sessions.len()),
            ("unconfirmed_ticket", tickets.len()),
        ] {
            self.expirations
                .with_label_values(&[room, kind])
                .inc_by(count as u64);
        }
        if sessions.is_empty() && tickets.is_empty() {
            return;
        }
        self.publish_with(|events| {
            let journeys = sessions
                .iter()
                .map(|s| (opaque(Of::Journey, room, &s.0.to_be_bytes()), "session"))
                .chain(
                    tickets
                        .iter()
                        .map(|t| (opaque(Of::Journey, room, t.as_bytes()), "ticket")),
                );
            for (journey, what) in journeys {
                let fields = Fields {
                    journey: Some(journey.as_str()),
                    what: Some(what),
                    ..Fields::default()
                };
                self.push(events, Kind::Unconfirmed, room, fields);
            }
        });
    }

    fn expired(
        &self,
        room: &str,
        kind: &'static str,
        session: Option<SessionId>,
        utm: Option<&Arc<Utm>>,
    ) {
        self.expirations.with_label_values(&[room, kind]).inc();
        let line = Line {
            kind: Some(kind),
            session,
            utm: utm.map(|u| &**u),
            ..Line::default()
        };
        write("expired", room, line);
        self.publish_with(|events| {
            let digest = session.map(|s| opaque_session(room, s));
            let fields = Fields {
                session: digest.as_ref().map(Hex16::as_str),
                what: Some(kind),
                attribution: utm.map(|u| &**u),
                ..Fields::default()
            };
            self.push(events, Kind::Expired, room, fields);
        });
    }
}

/// What an opaque id follows: the digests of the two never meet.
#[derive(Debug, Clone, Copy)]
enum Of {
    /// A visitor from arrival to admission.
    Journey,
    /// An admitted visitor.
    Session,
}

/// How a visitor was admitted, as counters and events name it.
fn how(from_line: bool) -> &'static str {
    if from_line { "queue" } else { "direct" }
}

/// The opaque id of an admitted visitor's session.
fn opaque_session(room: &str, session: SessionId) -> Hex16 {
    opaque(Of::Session, room, &session.0.to_be_bytes())
}

/// An id that links a visitor's events without telling the store's own
/// (SHA-256 of what it follows, the room and the id; the same on every
/// instance).
fn opaque(of: Of, room: &str, id: &[u8]) -> Hex16 {
    let tag: &[u8] = match of {
        Of::Journey => b"anteroom.journey",
        Of::Session => b"anteroom.session",
    };
    // The room after its length (names are at most 64 bytes), so no two
    // rooms and ids run together. Kept on the stack: for the usual room
    // name and id the input is one block of the digest.
    let room_len = [u8::try_from(room.len()).unwrap_or(u8::MAX)];
    let parts = [tag, &room_len, room.as_bytes(), id];
    let len = parts.iter().map(|p| p.len()).sum::<usize>();
    let mut stack = [0; 119];
    let mut heap = Vec::new();
    let input = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap[..]
    };
    let mut at = 0;
    for part in parts {
        input[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input);
    let mut first = [0; 16];
    first.copy_from_slice(&digest.as_ref()[..16]);
    Hex16::of(&first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opaque_id_is_the_same_for_the_same_visitor_and_apart_otherwise() {
        let id = opaque(Of::Journey, "web", b"19a2.1.7");
        assert_eq!(id, opaque(Of::Journey, "web", b"19a2.1.7"));
        for other in [
            opaque(Of::Session, "web", b"19a2.1.7"),
            opaque(Of::Journey, "web2", b"19a2.1.7"),
            opaque(Of::Journey, "web", b"19a2.1.8"),
            // The room's length keeps room and id apart.
            opaque(Of::Journey, "we", b"b19a2.1.7"),
        ] {
            assert_ne!(id, other);
        }
        // Past the stack buffer (a long room and id) the digest is the
        // same function of its parts.
        let room = "r".repeat(64);
        let long = opaque(Of::Journey, &room, &[7; 80]);
        assert_eq!(long, opaque(Of::Journey, &room, &[7; 80]));
        assert_ne!(long, opaque(Of::Journey, &room, &[7; 81]));
    }
}
