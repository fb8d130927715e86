//! One event of a visitor's journey or of a room, as every sink receives it:
//! schema version 1 (docs/events.md). Written once, by `events`, and
//! delivered at least once: `id` tells a repeat from a new event.

use std::cell::Cell;
use std::io::Write;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::attribution::Utm;
use crate::config::is_name;

/// The schema version every event carries in `v`.
pub const VERSION: u32 = 1;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A new visitor at a sessions room (let in at once or not).
    Arrived,
    /// A new visitor joined the line.
    Queued,
    /// A visitor was let in, at once or from the line (`wait_ms`).
    Admitted,
    /// An admitted visitor did what the room counts as a conversion.
    Converted,
    /// A session ended at once (`how`: `leave` or `command`).
    Released,
    /// A pass or a ticket lapsed (`what`: `session` or `ticket`).
    Expired,
    /// A waiting visitor left the line.
    Left,
    /// A request over a per-client limit (`limit`).
    RateLimited,
    /// A newcomer turned away (`reason`: `queue_full`, `maintenance`, ...).
    Refused,
    /// An operator changed a room (`change`).
    RoomChanged,
    /// A place whose visitor never came back with their token lapsed
    /// (`what`: `ticket` or `session`): that journey was never a visitor.
    Unconfirmed,
}

impl Kind {
    /// The name in subjects and files.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Arrived => "arrived",
            Kind::Queued => "queued",
            Kind::Admitted => "admitted",
            Kind::Converted => "converted",
            Kind::Released => "released",
            Kind::Expired => "expired",
            Kind::Left => "left",
            Kind::RateLimited => "rate_limited",
            Kind::Refused => "refused",
            Kind::RoomChanged => "room_changed",
            Kind::Unconfirmed => "unconfirmed",
        }
    }
}

/// What an operator changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The new state (`active`, `paused`, `maintenance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The new capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    /// The new admission rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admit_rate: Option<f64>,
}

/// What an event says beside its kind, room and instance, borrowed from
/// the caller: written straight into the event's JSON, in the schema's
/// order, rather than kept as a string per field.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fields<'a> {
    /// Links a visitor's events from arrival to admission (opaque; the
    /// same on every instance).
    pub journey: Option<&'a str>,
    /// Links an admitted visitor's events (opaque).
    pub session: Option<&'a str>,
    /// `priority` or `normal`.
    pub lane: Option<&'a str>,
    /// Place in line when queued.
    pub position: Option<u32>,
    /// Wait told when queued; waited when admitted.
    pub wait_ms: Option<u64>,
    /// How long a released visit lasted.
    pub visit_ms: Option<u64>,
    /// How a session ended (`leave`, `command`) or a visitor was admitted
    /// (`direct`, `queue`).
    pub how: Option<&'a str>,
    /// What expired (`session`, `ticket`).
    pub what: Option<&'a str>,
    /// Why a newcomer was refused, or which limit was hit.
    pub reason: Option<&'a str>,
    /// The campaign (UTM parameters and click ids), only with the
    /// visitor's consent when the site asks for it.
    pub attribution: Option<&'a Utm>,
    /// What an operator changed.
    pub change: Option<&'a Change>,
}

/// `,"name":`, what comes before a field's value, as one literal.
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":").as_bytes()
    };
}

/// Events as JSON lines in one buffer, and what the sinks route each by:
/// what the request path writes them into, each sink's buffer holds, and a
/// delivery sends. Memory is reused from batch to batch: a request's events
/// cost no allocation of their own, and the file sink writes the lines as
/// they are.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// Each event's JSON, followed by a newline.
    lines: Vec<u8>,
    events: Vec<Meta>,
    /// Events taken from the front and the bytes of their lines: what
    /// `move_front` leaves behind until it is worth moving the rest down.
    head: usize,
    head_bytes: usize,
}

impl PartialEq for Batch {
    fn eq(&self, other: &Batch) -> bool {
        self.metas() == other.metas() && self.lines() == other.lines()
    }
}

/// What an event is routed by, beside its line.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Meta {
    /// Unique (128 random bits): the same id is the same event.
    id: u128,
    /// When, in ms since the UNIX epoch.
    at: u64,
    kind: Kind,
    /// The line's length, its newline included.
    len: u32,
    /// Where the room's name is in the line (names need no escaping).
    room: (u32, u32),
}

/// One event of a [`Batch`].
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    meta: &'a Meta,
    /// The JSON, without its newline.
    json: &'a [u8],
}

/// The schema as serde reads and writes it: what a dead-letter file is
/// read back with, and what the hand-written JSON is tested against.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    v: u32,
    id: String,
    #[serde(rename = "type")]
    kind: Kind,
    time: String,
    room: String,
    instance: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    journey: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lane: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    position: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wait_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    visit_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    how: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    what: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attribution: Option<Utm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    change: Option<Change>,
}

/// A line that is not an event of this schema.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON of an event.
    #[error("not an event: {0}")]
    Json(#[from] serde_json::Error),
    /// A field with a value no event has.
    #[error("not an event: {0}")]
    Field(&'static str),
}

impl Batch {
    /// Adds a new event of `kind` in `room`, now, with a fresh id.
    pub fn push(&mut self, kind: Kind, room: &str, instance: &str, fields: &Fields<'_>) {
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.write(rand::random(), kind, at, room, instance, fields);
    }

    /// Adds an event read back (a dead-letter line), written again the
    /// same way: its id, time (to the millisecond) and fields are kept.
    pub fn push_line(&mut self, line: &str) -> Result<(), ParseError> {
        let wire: Wire = serde_json::from_str(line)?;
        if !is_name(&wire.room) {
            return Err(ParseError::Field("room is not a room name"));
        }
        let id = u128::from_str_radix(&wire.id, 16)
            .ok()
            .filter(|_| wire.id.len() == 32)
            .ok_or(ParseError::Field("id is not 32 hex digits"))?;
        let at = humantime::parse_rfc3339(&wire.time)
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_millis()).ok())
            .ok_or(ParseError::Field("time is not an RFC 3339 time"))?;
        let fields = Fields {
            journey: wire.journey.as_deref(),
            session: wire.session.as_deref(),
            lane: wire.lane.as_deref(),
            position: wire.position,
            wait_ms: wire.wait_ms,
            visit_ms: wire.visit_ms,
            how: wire.how.as_deref(),
            what: wire.what.as_deref(),
            reason: wire.reason.as_deref(),
            attribution: wire.attribution.as_ref(),
            change: wire.change.as_ref(),
        };
        self.write(id, wire.kind, at, &wire.room, &wire.instance, &fields);
        Ok(())
    }

    /// The JSON, field by field in the order and form serde gives it (a
    /// test holds the two equal): ids and times need no escaping, so most
    /// of an event is copied rather than escaped byte by byte.
    fn write(
        &mut self,
        id: u128,
        kind: Kind,
        at: u64,
        room: &str,
        instance: &str,
        fields: &Fields<'_>,
    ) {
        let begin = self.lines.len();
        let mut out = Json(&mut self.lines);
        out.0.extend_from_slice(b"{\"v\":");
        out.number(u64::from(VERSION));
        // The id and the type are hex and a name: nothing to escape.
        out.key(key!("id"));
        out.quoted(Hex16::of(&id.to_be_bytes()).as_str());
        out.key(key!("type"));
        out.quoted(kind.as_str());
        out.key(key!("time"));
        out.time(at);
        out.key(key!("room"));
        let start = out.0.len() + 1 - begin;
        out.string(room);
        // Where the name is. Room names need no escaping (config and
        // `push_line` allow none that would); one that did reads as empty.
        let end = out.0.len() - 1 - begin;
        let room_at = if end - start == room.len() {
            (start as u32, end as u32)
        } else {
            (end as u32, end as u32)
        };
        out.field(key!("instance"), instance);
        out.maybe(key!("journey"), fields.journey);
        out.maybe(key!("session"), fields.session);
        out.maybe(key!("lane"), fields.lane);
        if let Some(n) = fields.position {
            out.key(key!("position"));
            out.number(u64::from(n));
        }
        for (key, n) in [
            (key!("wait_ms"), fields.wait_ms),
            (key!("visit_ms"), fields.visit_ms),
        ] {
            if let Some(n) = n {
                out.key(key);
                out.number(n);
            }
        }
        out.maybe(key!("how"), fields.how);
        out.maybe(key!("what"), fields.what);
        out.maybe(key!("reason"), fields.reason);
        // Rare or small: serde writes these (plain structs: cannot fail).
        if let Some(utm) = fields.attribution {
            out.key(key!("attribution"));
            let _ = serde_json::to_writer(&mut *out.0, utm);
        }
        if let Some(change) = fields.change {
            out.key(key!("change"));
            let _ = serde_json::to_writer(&mut *out.0, change);
        }
        out.0.extend_from_slice(b"}\n");
        self.events.push(Meta {
            id,
            at,
            kind,
            len: (self.lines.len() - begin) as u32,
            room: room_at,
        });
    }

    /// How many events.
    pub fn len(&self) -> usize {
        self.metas().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.metas().is_empty()
    }

    /// Every event's JSON, a line each.
    pub fn lines(&self) -> &[u8] {
        self.lines.get(self.head_bytes..).unwrap_or_default()
    }

    fn metas(&self) -> &[Meta] {
        self.events.get(self.head..).unwrap_or_default()
    }

    /// The events, in order.
    pub fn iter(&self) -> impl Iterator<Item = Event<'_>> {
        let lines = self.lines();
        let mut at = 0;
        self.metas().iter().map(move |meta| {
            let line = lines.get(at..at + meta.len as usize).unwrap_or_default();
            at += meta.len as usize;
            Event {
                meta,
                json: line.strip_suffix(b"\n").unwrap_or(line),
            }
        })
    }

    /// The bytes of the first `n` events' lines.
    fn bytes_of(&self, n: usize) -> usize {
        self.metas().iter().take(n).map(|m| m.len as usize).sum()
    }

    /// Adds the events `from..` of `other`, in order.
    pub fn extend_from(&mut self, other: &Batch, from: usize) {
        let Some(events) = other.metas().get(from..) else {
            return;
        };
        let start = other.bytes_of(from);
        self.lines
            .extend_from_slice(other.lines().get(start..).unwrap_or_default());
        self.events.extend_from_slice(events);
    }

    /// Adds the first `n` events of `other` (all there are, at most);
    /// returns how many bytes of lines that was.
    pub fn extend_first(&mut self, other: &Batch, n: usize) -> usize {
        let n = n.min(other.len());
        let end = other.bytes_of(n);
        self.lines
            .extend_from_slice(other.lines().get(..end).unwrap_or_default());
        self.events
            .extend_from_slice(other.metas().get(..n).unwrap_or_default());
        end
    }

    /// Moves the first `n` events (all there are, at most) to the end of
    /// `into`. Taking them all into an empty batch swaps the two buffers:
    /// nothing is copied, and each keeps its memory for the next time.
    /// Taking fewer (a backlog, a batch at a time) copies only those: the
    /// rest move down once half the buffer is taken, not at every take.
    pub fn move_front(&mut self, n: usize, into: &mut Batch) {
        if n >= self.len() && into.is_empty() {
            std::mem::swap(self, into);
            self.clear();
            return;
        }
        let n = n.min(self.len());
        self.head_bytes += into.extend_first(self, n);
        self.head += n;
        if self.head == self.events.len() {
            self.clear();
        } else if self.head_bytes > self.lines.len() / 2 {
            self.lines.drain(..self.head_bytes);
            self.events.drain(..self.head);
            (self.head, self.head_bytes) = (0, 0);
        }
    }

    /// Empties it, keeping its memory.
    pub fn clear(&mut self) {
        self.lines.clear();
        self.events.clear();
        (self.head, self.head_bytes) = (0, 0);
    }
}

impl<'a> Event<'a> {
    /// The id, as the JSON has it (32 lower-case hex digits).
    pub fn id(&self) -> Hex16 {
        Hex16::of(&self.meta.id.to_be_bytes())
    }

    /// What happened.
    pub fn kind(&self) -> Kind {
        self.meta.kind
    }

    /// The room.
    pub fn room(&self) -> &'a str {
        let (start, end) = (self.meta.room.0 as usize, self.meta.room.1 as usize);
        self.json
            .get(start..end)
            .and_then(|name| std::str::from_utf8(name).ok())
            .unwrap_or_default()
    }

    /// The event as JSON.
    pub fn json(&self) -> &'a [u8] {
        self.json
    }

    /// Milliseconds since the UNIX epoch it happened at.
    pub fn millis(&self) -> u64 {
        self.meta.at
    }
}

/// An event's JSON as it is written.
struct Json<'a>(&'a mut Vec<u8>);

impl Json<'_> {
    /// A key with its quotes, comma and colon: one literal (`key!`).
    fn key(&mut self, key: &[u8]) {
        self.0.extend_from_slice(key);
    }

    fn field(&mut self, key: &[u8], value: &str) {
        self.key(key);
        self.string(value);
    }

    fn string(&mut self, value: &str) {
        // A fold rather than `any`: no early exit, so it runs many bytes
        // at a time (an event's strings need no escaping).
        let escape = value.bytes().fold(false, |seen, b| {
            seen | (b < 0x20) | (b == b'"') | (b == b'\\')
        });
        if escape {
            // serde escapes what needs it (a string cannot fail).
            let _ = serde_json::to_writer(&mut *self.0, value);
        } else {
            self.quoted(value);
        }
    }

    /// A string known to need no escaping.
    fn quoted(&mut self, value: &str) {
        self.0.push(b'"');
        self.0.extend_from_slice(value.as_bytes());
        self.0.push(b'"');
    }

    fn maybe(&mut self, key: &[u8], value: Option<&str>) {
        if let Some(value) = value {
            self.field(key, value);
        }
    }

    fn number(&mut self, n: u64) {
        self.0
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    /// `at` (ms since the UNIX epoch) as RFC 3339 in UTC with
    /// milliseconds, quoted. Events come many a second: the second's text
    /// is made once per thread and second, and only the milliseconds after.
    fn time(&mut self, at: u64) {
        thread_local! {
            static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
        }
        let (secs, ms) = (at / 1000, at % 1000);
        let prefix = SECOND.with(|cached| {
            let (second, text) = cached.get();
            if second == secs {
                return text;
            }
            // "YYYY-MM-DDTHH:MM:SSZ", 20 bytes.
            let mut text = [0; 20];
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let _ = write!(&mut text[..], "{}", humantime::format_rfc3339_seconds(t));
            cached.set((secs, text));
            text
        });
        self.0.push(b'"');
        // Up to the seconds; the milliseconds go where the "Z" was.
        self.0.extend_from_slice(&prefix[..19]);
        self.0.push(b'.');
        self.0.extend_from_slice(&[
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
            b'"',
        ]);
    }
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of 16 bytes, kept on the stack: an opaque id that two
/// events can share without an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hex16([u8; 32]);

impl Hex16 {
    /// The hex of `bytes`.
    pub fn of(bytes: &[u8; 16]) -> Hex16 {
        let mut out = [0; 32];
        for (i, b) in bytes.iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(b >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(b & 15)];
        }
        Hex16(out)
    }

    /// As text.
    pub fn as_str(&self) -> &str {
        // Hex digits only: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What serde writes of the event's JSON read back.
    fn serde_form(e: Event<'_>) -> String {
        let wire: Wire = serde_json::from_slice(e.json()).unwrap();
        serde_json::to_string(&wire).unwrap()
    }

    /// A batch of one new event.
    fn one(kind: Kind, room: &str, instance: &str, fields: &Fields<'_>) -> Batch {
        let mut batch = Batch::default();
        batch.push(kind, room, instance, fields);
        batch
    }

    fn first(batch: &Batch) -> Event<'_> {
        batch.iter().next().unwrap()
    }

    /// A batch of the one event `line` reads as.
    fn read(line: &str) -> Result<Batch, ParseError> {
        let mut batch = Batch::default();
        batch.push_line(line).map(|()| batch)
    }

    #[test]
    fn the_json_written_by_hand_is_what_serde_writes() {
        let plain = one(Kind::Arrived, "web", "a1", &Fields::default());
        assert_eq!(first(&plain).json(), serde_form(first(&plain)).as_bytes());
        let utm = Utm {
            campaign: Some("sp\"ring".into()),
            gclid: Some("g".into()),
            ..Utm::default()
        };
        let change = Change {
            state: Some("paused".into()),
            capacity: Some(3),
            admit_rate: Some(1.5),
        };
        let full = one(
            Kind::RoomChanged,
            "web.shop-1",
            "i\t1\"\\\u{e9}",
            &Fields {
                journey: Some("j"),
                session: Some("s"),
                lane: Some("priority"),
                position: Some(7),
                wait_ms: Some(0),
                visit_ms: Some(u64::MAX),
                how: Some("queue"),
                what: Some("ticket"),
                reason: Some("queue_full"),
                attribution: Some(&utm),
                change: Some(&change),
            },
        );
        let e = first(&full);
        assert_eq!(String::from_utf8(e.json().to_vec()).unwrap(), serde_form(e));
        assert_eq!(e.room(), "web.shop-1");
        assert_eq!(read(std::str::from_utf8(e.json()).unwrap()).unwrap(), full);
    }

    #[test]
    fn an_event_is_versioned_json_and_reads_back() {
        let utm = Utm {
            source: Some("meta".into()),
            ..Utm::default()
        };
        let fields = Fields {
            wait_ms: Some(1200),
            attribution: Some(&utm),
            ..Fields::default()
        };
        let batch = one(Kind::Admitted, "web", "a1", &fields);
        let e = first(&batch);
        let json: serde_json::Value = serde_json::from_slice(e.json()).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["type"], "admitted");
        assert_eq!(json["id"], e.id().as_str());
        assert_eq!(json["attribution"]["source"], "meta");
        assert!(json.get("session").is_none(), "absent fields are left out");
        assert_eq!(e.id().as_str().len(), 32);
        assert!(json["time"].as_str().unwrap().ends_with('Z'));
        let back = read(std::str::from_utf8(e.json()).unwrap()).unwrap();
        assert_eq!(back, batch, "the same id, kind, room, time and JSON");
        assert!(e.millis() > 1_700_000_000_000);
        // Two events never share an id.
        let other = one(Kind::Admitted, "web", "a1", &fields);
        assert_ne!(first(&other).id(), e.id());
    }

    #[test]
    fn a_line_that_is_not_an_event_is_refused() {
        let good = one(Kind::Left, "web", "a1", &Fields::default());
        let text = std::str::from_utf8(first(&good).json()).unwrap();
        for bad in [
            "{}".to_owned(),
            "not json".to_owned(),
            text.replace(first(&good).id().as_str(), "xyz"),
            text.replace("\"time\":\"", "\"time\":\"yesterday"),
            text.replace("\"left\"", "\"jumped\""),
            text.replace("\"web\"", "\"we b\""),
        ] {
            assert!(read(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_are_rfc3339_milliseconds_as_humantime_writes_them() {
        for at in [
            0,
            999,
            1_000,
            1_764_700_000_001,
            1_764_700_000_999,
            1_764_700_001_000,
            253_402_300_799_999,
        ] {
            let mut text = Vec::new();
            Json(&mut text).time(at);
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(at);
            assert_eq!(
                String::from_utf8(text).unwrap(),
                format!("\"{}\"", humantime::format_rfc3339_millis(t))
            );
        }
    }

    #[test]
    fn a_batch_moves_its_events_in_order_and_keeps_each_whole() {
        let mut from = Batch::default();
        for room in ["a", "b", "c"] {
            from.push(Kind::Arrived, room, "i", &Fields::default());
        }
        let rooms = |b: &Batch| b.iter().map(|e| e.room().to_owned()).collect::<Vec<_>>();
        assert_eq!(from.lines().iter().filter(|&&b| b == b'\n').count(), 3);
        let mut into = Batch::default();
        from.move_front(2, &mut into);
        assert_eq!(
            (rooms(&into), rooms(&from)),
            (vec!["a".into(), "b".into()], vec!["c".into()])
        );
        for e in into.iter().chain(from.iter()) {
            assert!(e.json().starts_with(b"{") && e.json().ends_with(b"}"));
        }
        // All of them into an empty batch: the buffers swap.
        let mut all = Batch::default();
        into.move_front(5, &mut all);
        assert!(into.is_empty());
        all.extend_from(&from, 0);
        all.extend_first(&from, 0);
        assert_eq!(rooms(&all), ["a", "b", "c"]);
        let mut rest = Batch::default();
        rest.extend_from(&all, 1);
        assert_eq!(rooms(&rest), ["b", "c"]);
        rest.extend_from(&all, 9);
        assert_eq!(rest.len(), 2);
    }

    #[test]
    fn a_backlog_taken_a_batch_at_a_time_comes_out_whole_and_in_order() {
        let mut backlog = Batch::default();
        let rooms: Vec<String> = (0..25).map(|i| format!("r{i}")).collect();
        for room in &rooms {
            backlog.push(Kind::Queued, room, "i", &Fields::default());
        }
        let (mut out, mut batch) = (Vec::new(), Batch::default());
        while !backlog.is_empty() {
            let before = backlog.len();
            backlog.move_front(4, &mut batch);
            assert_eq!(batch.len(), before.min(4));
            assert_eq!(
                batch.lines().iter().filter(|&&b| b == b'\n').count(),
                batch.len()
            );
            // More comes in meanwhile, after what is left.
            if out.len() == 8 {
                backlog.push(Kind::Left, "late", "i", &Fields::default());
            }
            for e in batch.iter() {
                let json: serde_json::Value = serde_json::from_slice(e.json()).unwrap();
                assert_eq!(json["room"], e.room());
                out.push(e.room().to_owned());
            }
            batch.clear();
        }
        let mut expected = rooms;
        expected.push("late".into());
        assert_eq!(out, expected);
    }

    #[test]
    fn hex16_is_lower_case_hex() {
        let mut bytes = [0u8; 16];
        bytes[0] = 0xab;
        bytes[15] = 0x01;
        assert_eq!(
            Hex16::of(&bytes).as_str(),
            "ab000000000000000000000000000001"
        );
    }
}
