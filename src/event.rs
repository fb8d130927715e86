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
    pub fn json(&self) -> &[u8] {
        // Our own plain struct: serializing cannot fail.
        self.json
            .get_or_init(|| serde_json::to_vec(self).unwrap_or_default())
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
