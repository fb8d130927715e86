//! The adaptive limit of a `requests` room (`adaptive = true`): additive
//! increase, multiplicative decrease (AIMD, Chiu and Jain 1989; the
//! `AIMDLimit` of Netflix's concurrency-limits), driven by what the upstream
//! says rather than by latency. An LLM's response time grows with the tokens
//! it writes, so latency (what a gradient limit like Envoy's adaptive
//! concurrency follows) says little about its load, while `429`/`503` and
//! their retry hints say exactly that it is over its limit.
//!
//! - An overloaded answer (`429`, `503`) multiplies the limit by
//!   [`BACKOFF`] (taking at least one off), at most once per round trip (answers to requests sent
//!   before the last decrease do not count again, as in TCP), never below
//!   `min_capacity`; a retry hint pauses new admissions until then.
//! - A healthy answer while the room is at least half used counts towards
//!   growth: after as many as the limit, it grows by one, up to `capacity`.
//!
//! On a shared store the limit is one for every instance, moved by an
//! atomic step in the store ([`Adapted::Shared`]) in the background, so an
//! answer never waits for the store; each instance keeps a view of it, the
//! pause and its count of healthy answers.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderMap;
use parking_lot::Mutex;

use crate::limits::slots::Slots;
use crate::store::{Leases, Step};

/// The limit is multiplied by this on an overloaded answer.
pub const BACKOFF: f64 = 0.9;
/// A retry hint longer than this is taken as this long.
const LONGEST_HINT: Duration = Duration::from_secs(3600);

/// A room's adaptive limit.
#[derive(Debug)]
pub struct Adaptive {
    min: u32,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limit: u32,
    /// The room's capacity: the limit's ceiling.
    max: u32,
    healthy: u32,
    decreased: Option<Instant>,
    paused_until: Option<Instant>,
}

impl Adaptive {
    /// A limit starting at `max`.
    pub fn new(min: u32, max: u32) -> Adaptive {
        let min = min.clamp(1, max.max(1));
        Adaptive {
            min,
            state: Mutex::new(State {
                limit: max,
                max,
                healthy: 0,
                decreased: None,
                paused_until: None,
            }),
        }
    }

    /// The floor (`min_capacity`).
    pub fn min(&self) -> u32 {
        self.min
    }

    /// The limit now.
    pub fn limit(&self) -> u32 {
        self.state.lock().limit
    }

    /// The room's capacity changed (admin or reload): the ceiling moves.
    pub fn set_max(&self, max: u32) -> u32 {
        let mut s = self.state.lock();
        s.max = max;
        s.limit = s.limit.min(max).max(self.min.min(max));
        s.limit
    }

    /// The limit as the store moved it (a shared room's view).
    fn set_current(&self, limit: u32) {
        self.state.lock().limit = limit;
    }

    /// The upstream answered a request sent at `sent` with `429`/`503`;
    /// `hint` is how long it asked to wait. Returns the new limit if it moved.
    pub fn overloaded(&self, sent: Instant, hint: Option<Duration>, now: Instant) -> Option<u32> {
        let mut s = self.state.lock();
        if let Some(hint) = hint {
            s.pause(hint, now);
        }
        s.healthy = 0;
        if s.decreased.is_some_and(|d| sent < d) {
            return None;
        }
        s.decreased = Some(now);
        let before = s.limit;
        // At least one less, so small limits shrink too.
        let after = shrunk(before).max(self.min);
        s.limit = after;
        (after != before).then_some(after)
    }

    /// Pauses new admissions for `hint` (a hint read after the answer's
    /// header, from its body).
    pub fn pause(&self, hint: Duration, now: Instant) {
        self.state.lock().pause(hint, now);
    }

    /// The upstream answered well while `in_flight` requests of the room
    /// were under way. Returns the new limit if it moved.
    pub fn healthy(&self, in_flight: u32) -> Option<u32> {
        let mut s = self.state.lock();
        let limit = s.limit;
        if in_flight.saturating_mul(2) < limit || limit >= s.max {
            return None;
        }
        s.healthy += 1;
        if s.healthy < limit {
            return None;
        }
        s.healthy = 0;
        s.limit = (limit + 1).min(s.max);
        Some(s.limit)
    }

    /// How long new admissions still pause for the upstream's hint.
    pub fn paused(&self, now: Instant) -> Option<Duration> {
        let s = self.state.lock();
        s.paused_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }
}

impl State {
    fn pause(&mut self, hint: Duration, now: Instant) {
        let until = now + hint.min(LONGEST_HINT);
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }
}

/// The limit times [`BACKOFF`], and at least one less.
fn shrunk(limit: u32) -> u32 {
    // Below u32::MAX and not negative, so the cast never truncates.
    let scaled = (f64::from(limit) * BACKOFF).floor() as u32;
    scaled.min(limit.saturating_sub(1))
}

/// A room's adaptive limit, here or shared by every instance.
pub enum Adapted {
    /// Kept by this instance, applied to its slots.
    Local {
        /// The limit.
        limit: Adaptive,
        /// The room's slots, which it caps.
        slots: Arc<Slots>,
    },
    /// Kept in the store; `view` is this instance's copy of it.
    Shared {
        /// The last limit the store gave, the pause, the healthy count.
        view: Arc<Adaptive>,
        /// The room's name in the store.
        room: String,
        /// The store.
        store: Arc<dyn Leases>,
    },
}

impl Adapted {
    fn here(&self) -> &Adaptive {
        match self {
            Adapted::Local { limit, .. } => limit,
            Adapted::Shared { view, .. } => view,
        }
    }

    /// The limit now (a shared one: as last heard from the store).
    pub fn limit(&self) -> u32 {
        self.here().limit()
    }

    /// The floor (`min_capacity`).
    pub fn min(&self) -> u32 {
        self.here().min()
    }

    /// How long new admissions still pause for the upstream's hint.
    pub fn paused(&self, now: Instant) -> Option<Duration> {
        self.here().paused(now)
    }

    /// Pauses new admissions for a hint read from an answer's body.
    pub fn pause(&self, hint: Duration, now: Instant) {
        self.here().pause(hint, now);
    }

    /// The capacity changed: the ceiling moves (a shared store caps the
    /// limit with the capacity itself).
    pub fn set_max(&self, max: u32) {
        let limit = self.here().set_max(max);
        if let Adapted::Local { slots, .. } = self {
            slots.set_limit(limit);
        }
    }

    /// The upstream answered a request of room `room` sent at `sent` with
    /// `429`/`503`. Returns whether the limit shrinks for it (a shared one:
    /// whether it can, the store deciding).
    pub fn overloaded(
        &self,
        room: &str,
        sent: Instant,
        hint: Option<Duration>,
        now: Instant,
    ) -> bool {
        match self {
            Adapted::Local { limit, slots } => {
                let Some(limit) = limit.overloaded(sent, hint, now) else {
                    return false;
                };
                tracing::info!(
                    room,
                    limit,
                    "the upstream is over its limit; the room's limit shrinks"
                );
                slots.set_limit(limit);
                true
            }
            Adapted::Shared { view, .. } => {
                if let Some(hint) = hint {
                    view.pause(hint, now);
                }
                self.step(Step::Down {
                    age: now.saturating_duration_since(sent),
                    min: view.min(),
                });
                view.limit() > view.min()
            }
        }
    }

    /// The upstream answered well while `in_flight` requests of the room
    /// were under way.
    pub fn healthy(&self, in_flight: u32) {
        let Some(limit) = self.here().healthy(in_flight) else {
            return;
        };
        match self {
            Adapted::Local { slots, .. } => slots.set_limit(limit),
            Adapted::Shared { .. } => self.step(Step::Up),
        }
    }

    /// Reads the shared limit again (other instances move it too).
    pub async fn refresh(&self) {
        if let Adapted::Shared { view, room, store } = self {
            match store.adapt(room, Step::Keep).await {
                Ok(limit) => view.set_current(limit),
                Err(e) => tracing::debug!(room, error = %e, "adaptive limit not read"),
            }
        }
    }

    /// Moves the shared limit in the background; the view follows the
    /// store's answer. A store that fails leaves the limit where it was.
    fn step(&self, step: Step) {
        let Adapted::Shared { view, room, store } = self else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (view, room, store) = (Arc::clone(view), room.clone(), Arc::clone(store));
        runtime.spawn(async move {
            match store.adapt(&room, step).await {
                Ok(limit) => {
                    if limit < view.limit() {
                        tracing::info!(
                            room,
                            limit,
                            "the upstream is over its limit; the room's limit shrinks"
                        );
                    }
                    view.set_current(limit);
                }
                Err(e) => tracing::debug!(room, error = %e, "adaptive limit not moved"),
            }
        });
    }
}

/// How long an upstream asked to be left alone, from its response headers:
/// `Retry-After` (seconds or an HTTP date), `retry-after-ms` (Azure OpenAI),
/// or the later of OpenAI's `x-ratelimit-reset-requests` and
/// `x-ratelimit-reset-tokens` (`"1s"`, `"6m0s"`, `"20ms"`).
pub fn retry_hint(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = text("retry-after-ms").and_then(|t| t.trim().parse::<u64>().ok()) {
        return Some(Duration::from_millis(ms));
    }
    if let Some(value) = text("retry-after") {
        let value = value.trim();
        if let Ok(secs) = value.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = httpdate::parse_http_date(value) {
            return Some(at.duration_since(now).unwrap_or_default());
        }
    }
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .into_iter()
        .filter_map(|name| text(name).and_then(go_duration))
        .max()
}

/// A duration as Go prints it: `"1h2m3.5s"`, `"20ms"`.
fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    let mut total = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Gemini's hint in a `429` body: `"retryDelay": "30s"` (a protobuf
/// duration) in the error's `RetryInfo` detail, read as the body streams by.
#[derive(Debug, Default)]
pub struct BodyHint {
    seen: Vec<u8>,
}

/// Bytes of a `429` body looked at for the hint: error bodies are small.
const BODY_HINT_BYTES: usize = 8 * 1024;

impl BodyHint {
    /// Looks at the next chunk.
    pub fn feed(&mut self, chunk: &[u8]) {
        let room = BODY_HINT_BYTES.saturating_sub(self.seen.len());
        self.seen.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// The delay the body asked for, if it did.
    pub fn delay(&self) -> Option<Duration> {
        const KEY: &[u8] = b"\"retryDelay\"";
        let at = self.seen.windows(KEY.len()).position(|w| w == KEY)?;
        let rest = std::str::from_utf8(&self.seen[at + KEY.len()..]).ok()?;
        let rest = rest.trim_start().strip_prefix(':')?.trim_start();
        let value = rest.strip_prefix('"')?;
        let value = &value[..value.find('"')?];
        go_duration(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_backs_off_once_per_round_trip_down_to_the_minimum() {
        let a = Adaptive::new(2, 10);
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(1);
        assert_eq!(a.overloaded(t0, None, later), Some(9));
        // Sent before that decrease: the same burst of 429s, not counted twice.
        assert_eq!(a.overloaded(t0, None, later), None);
        let mut steps = 1;
        let mut now = later;
        while a.limit() > 2 {
            let sent = now + Duration::from_millis(1);
            now = sent + Duration::from_millis(1);
            a.overloaded(sent, None, now);
            steps += 1;
        }
        assert_eq!(steps, 8, "10 → 9 → 8 → 7 → 6 → 5 → 4 → 3 → 2");
        a.overloaded(
            now + Duration::from_secs(1),
            None,
            now + Duration::from_secs(2),
        );
        assert_eq!(a.limit(), 2, "never below min_capacity");
    }

    #[test]
    fn health_under_use_grows_by_one_per_window_up_to_capacity() {
        let a = Adaptive::new(1, 4);
        let t = Instant::now();
        a.overloaded(t, None, t); // 3.6
        assert_eq!(a.limit(), 3);
        // Idle rooms do not grow: one in flight of a limit of 3 is not "used".
        for _ in 0..10 {
            assert_eq!(a.healthy(1), None);
        }
        assert_eq!(a.healthy(2), None);
        assert_eq!(a.healthy(2), None);
        assert_eq!(a.healthy(2), Some(4));
        for _ in 0..10 {
            assert_eq!(a.healthy(4), None, "capacity is the ceiling");
        }
        assert_eq!(a.set_max(2), 2);
    }

    #[test]
    fn a_hint_pauses_admissions_until_then() {
        let a = Adaptive::new(1, 4);
        let now = Instant::now();
        a.overloaded(now, Some(Duration::from_secs(2)), now);
        assert_eq!(a.paused(now), Some(Duration::from_secs(2)));
        assert_eq!(a.paused(now + Duration::from_secs(3)), None);
    }

    #[test]
    fn hints_are_read_from_the_headers_providers_send() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().unwrap());
            }
            h
        };
        let hint = |pairs: &[(&'static str, &str)]| retry_hint(&headers(pairs), now);
        assert_eq!(hint(&[("retry-after", "7")]), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            hint(&[("retry-after", &date)]),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            hint(&[("retry-after-ms", "250")]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            hint(&[
                ("x-ratelimit-reset-requests", "1s"),
                ("x-ratelimit-reset-tokens", "6m0s")
            ]),
            Some(Duration::from_secs(360))
        );
        assert_eq!(hint(&[("retry-after", "soon")]), None);
        assert_eq!(hint(&[]), None);
        assert_eq!(go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(go_duration("5x"), None);
    }

    #[test]
    fn geminis_retry_delay_is_read_from_the_body() {
        let body = r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay": "12s"}]}}"#;
        let mut hint = BodyHint::default();
        let (a, b) = body.split_at(90);
        hint.feed(a.as_bytes());
        hint.feed(b.as_bytes());
        assert_eq!(hint.delay(), Some(Duration::from_secs(12)));
        let mut none = BodyHint::default();
        none.feed(b"{\"error\":{\"code\":429}}");
        assert_eq!(none.delay(), None);
    }
}
