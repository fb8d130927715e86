//! One event of a visitor's journey or of a room, as every sink receives it:
//! schema version 1 (docs/events.md). Written once, by `events`, and
//! delivered at least once: `id` tells a repeat from a new event.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::attribution::Utm;

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

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Schema version ([`VERSION`]).
    pub v: u32,
    /// Unique (128 random bits, hex): the same id is the same event.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// When, RFC 3339 in UTC with milliseconds.
    pub time: String,
    /// The room.
    pub room: String,
    /// The instance that saw it (`[events] instance`).
    pub instance: Arc<str>,
    /// Links a visitor's events from arrival to admission (opaque; the
    /// same on every instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journey: Option<String>,
    /// Links an admitted visitor's events (opaque).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// `priority` or `normal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
    /// Place in line when queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// Wait told when queued; waited when admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// How long a released visit lasted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visit_ms: Option<u64>,
    /// How a session ended (`leave`, `command`) or a visitor was admitted
    /// (`direct`, `queue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub how: Option<String>,
    /// What expired (`session`, `ticket`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub what: Option<String>,
    /// Why a newcomer was refused, or which limit was hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The campaign (UTM parameters and click ids), only with the
    /// visitor's consent when the site asks for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<Arc<Utm>>,
    /// What an operator changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// The JSON, made once for every sink.
    #[serde(skip)]
    json: OnceLock<Vec<u8>>,
    /// `time` in ms since the UNIX epoch, when made here (0 when read back).
    #[serde(skip)]
    at: u64,
}

impl Event {
    /// A new event of `kind` in `room`, now, with a fresh id.
    pub fn new(kind: Kind, room: &str, instance: &Arc<str>) -> Event {
        let now = SystemTime::now();
        Event {
            v: VERSION,
            id: hex(&rand::random::<u128>().to_be_bytes()),
            kind,
            time: humantime::format_rfc3339_millis(now).to_string(),
            room: room.to_owned(),
            instance: Arc::clone(instance),
            journey: None,
            session: None,
            lane: None,
            position: None,
            wait_ms: None,
            visit_ms: None,
            how: None,
            what: None,
            reason: None,
            attribution: None,
            change: None,
            json: OnceLock::new(),
            at: now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// The event as JSON, serialized at most once (every sink shares it).
    /// Written field by field, in the order and form serde gives it (a
    /// test holds the two equal): ids and times need no escaping, so most
    /// of an event is copied rather than escaped byte by byte.
    pub fn json(&self) -> &[u8] {
        self.json.get_or_init(|| {
            let mut out = Json(Vec::with_capacity(384));
            out.0.extend_from_slice(b"{\"v\":");
            out.number(u64::from(self.v));
            out.field("id", &self.id);
            out.field("type", self.kind.as_str());
            out.field("time", &self.time);
            out.field("room", &self.room);
            out.field("instance", &self.instance);
            out.maybe("journey", self.journey.as_deref());
            out.maybe("session", self.session.as_deref());
            out.maybe("lane", self.lane.as_deref());
            if let Some(n) = self.position {
                out.key("position");
                out.number(u64::from(n));
            }
            for (key, n) in [("wait_ms", self.wait_ms), ("visit_ms", self.visit_ms)] {
                if let Some(n) = n {
                    out.key(key);
                    out.number(n);
                }
            }
            out.maybe("how", self.how.as_deref());
            out.maybe("what", self.what.as_deref());
            out.maybe("reason", self.reason.as_deref());
            // Rare or small: serde writes these (plain structs: cannot fail).
            if let Some(utm) = &self.attribution {
                out.key("attribution");
                let _ = serde_json::to_writer(&mut out.0, &**utm);
            }
            if let Some(change) = &self.change {
                out.key("change");
                let _ = serde_json::to_writer(&mut out.0, change);
            }
            out.0.push(b'}');
            out.0
        })
    }

    /// Milliseconds since the UNIX epoch it happened at (0 if unreadable).
    pub fn millis(&self) -> u64 {
        if self.at > 0 {
            return self.at;
        }
        humantime::parse_rfc3339(&self.time)
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// An event's JSON as it is written.
struct Json(Vec<u8>);

impl Json {
    fn key(&mut self, key: &str) {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    fn field(&mut self, key: &str, value: &str) {
        self.key(key);
        if value.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            // serde escapes what needs it (a string cannot fail).
            let _ = serde_json::to_writer(&mut self.0, value);
        } else {
            self.0.push(b'"');
            self.0.extend_from_slice(value.as_bytes());
            self.0.push(b'"');
        }
    }

    fn maybe(&mut self, key: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.field(key, value);
        }
    }

    fn number(&mut self, n: u64) {
        self.0
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }
}

/// Lower-case hex, without a `format!` per byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_written_by_hand_is_what_serde_writes() {
        let plain = Event::new(Kind::Arrived, "web", &Arc::from("a1"));
        assert_eq!(plain.json(), serde_json::to_vec(&plain).unwrap());
        let mut full = Event::new(Kind::RoomChanged, "we\"b\\\n\u{e9}", &Arc::from("i\t1"));
        full.journey = Some("j".into());
        full.session = Some("s".into());
        full.lane = Some("priority".into());
        full.position = Some(7);
        full.wait_ms = Some(0);
        full.visit_ms = Some(u64::MAX);
        full.how = Some("queue".into());
        full.what = Some("ticket".into());
        full.reason = Some("queue_full".into());
        full.attribution = Some(Arc::new(Utm {
            campaign: Some("sp\"ring".into()),
            gclid: Some("g".into()),
            ..Utm::default()
        }));
        full.change = Some(Change {
            state: Some("paused".into()),
            capacity: Some(3),
            admit_rate: Some(1.5),
        });
        assert_eq!(
            String::from_utf8(full.json().to_vec()).unwrap(),
            serde_json::to_string(&full).unwrap()
        );
    }

    #[test]
    fn an_event_is_versioned_json_and_reads_back() {
        let mut e = Event::new(Kind::Admitted, "web", &Arc::from("a1"));
        e.wait_ms = Some(1200);
        e.attribution = Some(Arc::new(Utm {
            source: Some("meta".into()),
            ..Utm::default()
        }));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["type"], "admitted");
        assert_eq!(json["attribution"]["source"], "meta");
        assert!(json.get("session").is_none(), "absent fields are left out");
        assert_eq!(e.id.len(), 32);
        assert!(e.time.ends_with('Z'));
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back.id, e.id);
        assert_eq!(back.attribution, e.attribution);
        assert_eq!(back.json(), e.json());
        // Its time reads back to the same millisecond.
        assert_eq!(back.millis(), e.millis());
        assert!(e.millis() > 1_700_000_000_000);
    }
}
