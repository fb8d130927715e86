//! `[[room]]`: a capacity and, by its kind, how it is shared.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::checks::{DEFAULT_TICKET_TTL, Problems, index_by_name, rules};
use crate::config::file::{CodesFile, LaunchFile, LimitsFile, RoomFile};
use crate::config::{
    AdaptiveLimit, Bind, CodeLane, Codes, Conversion, FairBy, Fairness, Launch, Limits,
    MAX_ADMIT_RATE, MAX_CAPACITY, OnStoreError, ProofOfWork, Rate, Requests, Room, RoomKind,
    RoomMode, Sessions, State, TokenBudget, Tokens, UnknownClients,
};

const MAX_POW_BITS: i64 = 28;

const MIN_POW_BITS: i64 = 8;

/// Proof of work: 16 bits take a browser well under a second, 28 bits
/// minutes; below 8 it stops nobody.
const DEFAULT_POW_BITS: u8 = 16;

const MAX_WAIT_LIMIT: Duration = Duration::from_secs(300);

/// Every `[[room]]`, with their index by name. A sessions room's tickets
/// live as long as `[tokens]` says, and need its signing key.
pub(super) fn rooms(
    p: &mut Problems,
    files: &[RoomFile],
    jwts: &HashMap<String, usize>,
    tokens: Option<&Tokens>,
) -> (Vec<Room>, HashMap<String, usize>) {
    let mut rooms: Vec<Room> = files
        .iter()
        .enumerate()
        .filter_map(|(i, r)| room(p, i, r, jwts))
        .collect();
    let index = index_by_name(p, "room", files.iter().map(|r| &r.name));
    check_cookie_paths(p, &rooms);
    for room in &mut rooms {
        if let (RoomKind::Sessions(s), Some(t)) = (&mut room.kind, tokens) {
            s.ticket_ttl = t.ticket_ttl;
        }
    }
    if tokens.is_none() && rooms.iter().any(|r| r.sessions().is_some()) {
        p.add(
            "tokens.signing_key",
            "sessions rooms sign passes and tickets: add [tokens] signing_key (create one with `anteroom keygen --out certs/`)",
        );
    }
    (rooms, index)
}

/// Keys of `[[room]]` that every room takes.
const COMMON_KEYS: &[&str] = &[
    "name",
    "mode",
    "capacity",
    "bypass",
    "on_store_error",
    "priority",
    "priority_weight",
];

/// Keys of `[[room]]` that only a `requests` room takes.
const REQUESTS_KEYS: &[&str] = &[
    "max_wait",
    "rate",
    "tokens_per_minute",
    "token_estimate",
    "usage_path",
    "adaptive",
    "min_capacity",
    "fair_by",
];

/// Keys of `[[room]]` that only a `sessions` room takes.
const SESSIONS_KEYS: &[&str] = &[
    "session_ttl",
    "session_max",
    "admit_rate",
    "max_queue",
    "poll_interval",
    "heartbeat_timeout",
    "rejoin_grace",
    "claim_window",
    "confirm_window",
    "queue_status",
    "state",
    "avg_session",
    "page_template",
    "language",
    "cookie_path",
    "conversion",
    "limits",
    "challenge",
    "challenge_difficulty",
    "bind",
    "invite_only",
    "event",
    "codes",
];

fn room(p: &mut Problems, i: usize, r: &RoomFile, jwts: &HashMap<String, usize>) -> Option<Room> {
    let key = format!("room[{i}]");
    p.name(&format!("{key}.name"), &r.name);
    let mode = match r.mode.as_str() {
        "requests" => Some(RoomMode::Requests),
        "sessions" => Some(RoomMode::Sessions),
        other => {
            p.add(
                format!("{key}.mode"),
                format!("{other:?} is not a room mode: use \"requests\" (in-flight requests) or \"sessions\" (admitted visitors)"),
            );
            None
        }
    };
    let capacity = p.int_in(
        &format!("{key}.capacity"),
        r.capacity,
        1,
        i64::from(MAX_CAPACITY),
    );
    let bypass = rules(p, &format!("{key}.bypass"), r.bypass.as_ref(), jwts);
    let on_store_error = match r.on_store_error.as_deref().unwrap_or("closed") {
        "closed" => OnStoreError::Closed,
        "open" => OnStoreError::Open,
        other => {
            p.add(
                format!("{key}.on_store_error"),
                format!("{other:?} is not a policy: use \"closed\" (newcomers wait) or \"open\" (newcomers pass)"),
            );
            OnStoreError::Closed
        }
    };
    let mode = mode?;
    refuse_other_kinds_keys(p, &key, r, mode);
    let kind = match mode {
        RoomMode::Requests => RoomKind::Requests(requests(p, &key, r, jwts, capacity)),
        RoomMode::Sessions => RoomKind::Sessions(Box::new(sessions(p, &key, r, jwts))),
    };
    Some(Room {
        name: r.name.clone(),
        capacity: capacity? as u32,
        bypass,
        on_store_error,
        kind,
    })
}

/// The keys given that belong to the other kind of room: each is a problem,
/// with a pointer to what this kind has instead where there is one.
fn refuse_other_kinds_keys(p: &mut Problems, key: &str, r: &RoomFile, mode: RoomMode) {
    for given in given_keys(r) {
        let Some(Some(owner)) = kind_of_key(&given) else {
            continue;
        };
        if owner == mode {
            continue;
        }
        let instead = match given.as_str() {
            "rate" => "; a sessions room has admit_rate",
            "max_wait" => "; a sessions room queues visitors instead",
            _ => "",
        };
        p.add(
            format!("{key}.{given}"),
            format!(
                "only applies to rooms in {:?} mode{instead}",
                owner.as_str()
            ),
        );
    }
}

/// Which kind of room a key of `[[room]]` belongs to: `Some(None)` for
/// every kind, `None` for a key in no list.
fn kind_of_key(key: &str) -> Option<Option<RoomMode>> {
    if COMMON_KEYS.contains(&key) {
        Some(None)
    } else if REQUESTS_KEYS.contains(&key) {
        Some(Some(RoomMode::Requests))
    } else if SESSIONS_KEYS.contains(&key) {
        Some(Some(RoomMode::Sessions))
    } else {
        None
    }
}

/// The keys a `[[room]]` table gives, as written.
fn given_keys(r: &RoomFile) -> Vec<String> {
    // Serialising leaves out the keys not given (`None`), so the table's
    // keys are exactly the file's, whatever keys `RoomFile` grows.
    toml::Table::try_from(r)
        .map(|table| table.keys().cloned().collect())
        .unwrap_or_default()
}

/// The settings of a `requests` room.
fn requests(
    p: &mut Problems,
    key: &str,
    r: &RoomFile,
    jwts: &HashMap<String, usize>,
    capacity: Option<i64>,
) -> Requests {
    let max_wait = p.duration(
        &format!("{key}.max_wait"),
        r.max_wait.as_deref(),
        Duration::ZERO,
    );
    if max_wait > MAX_WAIT_LIMIT {
        p.add(
            format!("{key}.max_wait"),
            format!(
                "must be at most {}, got {}",
                humantime::format_duration(MAX_WAIT_LIMIT),
                humantime::format_duration(max_wait)
            ),
        );
    }
    let rate = r.rate.as_deref().and_then(|text| {
        let parsed = Rate::parse(text);
        if parsed.is_none() {
            p.add(
                format!("{key}.rate"),
                format!("{text:?} is not a rate: use requests per second, minute or hour, e.g. \"60/m\" (1 to 1,000,000)"),
            );
        }
        parsed
    });
    Requests {
        max_wait,
        rate,
        tokens: token_budget(p, key, r),
        usage_key: usage_key(p, key, r),
        adaptive: adaptive(p, key, r, capacity),
        fair: fairness(p, key, r, jwts),
    }
}

/// `tokens_per_minute` and `token_estimate`.
fn token_budget(p: &mut Problems, key: &str, r: &RoomFile) -> Option<TokenBudget> {
    let (tpm, estimate) = match (r.tokens_per_minute, r.token_estimate) {
        (None, None) => return None,
        (None, Some(_)) => {
            p.add(
                format!("{key}.token_estimate"),
                "only applies with tokens_per_minute",
            );
            return None;
        }
        (Some(tpm), estimate) => (tpm, estimate),
    };
    let per_minute = p.int_in(&format!("{key}.tokens_per_minute"), tpm, 1, 100_000_000)?;
    let estimate = match estimate {
        Some(e) => p.int_in(&format!("{key}.token_estimate"), e, 1, per_minute)?,
        None => 1000.min(per_minute),
    };
    Some(TokenBudget {
        per_minute: per_minute as u32,
        estimate: estimate as u32,
    })
}

/// `usage_path`: the last name of the path is the key read.
fn usage_key(p: &mut Problems, key: &str, r: &RoomFile) -> Option<String> {
    let path = r.usage_path.as_deref()?;
    let last = path.rsplit('.').next().unwrap_or_default();
    let ok = path.split('.').all(|name| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    });
    if !ok {
        p.add(
            format!("{key}.usage_path"),
            format!("{path:?} is not a JSON path: give names joined by dots, e.g. \"usageMetadata.totalTokenCount\""),
        );
    }
    if r.tokens_per_minute.is_none() {
        p.add(
            format!("{key}.usage_path"),
            "only applies with tokens_per_minute",
        );
    }
    ok.then(|| last.to_owned())
}

/// `adaptive` and `min_capacity`.
fn adaptive(
    p: &mut Problems,
    key: &str,
    r: &RoomFile,
    capacity: Option<i64>,
) -> Option<AdaptiveLimit> {
    match (r.adaptive, r.min_capacity) {
        (Some(true), min) => {
            let min = min.map_or(Some(1), |m| {
                p.int_in(
                    &format!("{key}.min_capacity"),
                    m,
                    1,
                    capacity.unwrap_or(1_000_000),
                )
            });
            min.map(|min| AdaptiveLimit { min: min as u32 })
        }
        (_, Some(_)) => {
            p.add(
                format!("{key}.min_capacity"),
                "only applies with adaptive = true",
            );
            None
        }
        _ => None,
    }
}

/// `fair_by`, `priority` and `priority_weight` of a `requests` room.
fn fairness(p: &mut Problems, key: &str, r: &RoomFile, jwts: &HashMap<String, usize>) -> Fairness {
    let by = match r.fair_by.as_deref() {
        None | Some("none") => FairBy::None,
        Some("client") => FairBy::Client,
        Some("session") => FairBy::Session,
        Some(other) => match other.strip_prefix("header:") {
            Some(name) => match http::HeaderName::from_bytes(name.trim().as_bytes()) {
                Ok(name) => FairBy::Header(name),
                Err(_) => {
                    p.add(
                        format!("{key}.fair_by"),
                        format!("{name:?} is not a header name"),
                    );
                    FairBy::None
                }
            },
            None => {
                p.add(
                    format!("{key}.fair_by"),
                    format!("{other:?} is not a way to take turns: use \"client\", \"session\", \"header:NAME\" or \"none\""),
                );
                FairBy::None
            }
        },
    };
    if by == FairBy::None && (r.priority.is_some() || r.priority_weight.is_some()) {
        p.add(
            format!("{key}.priority"),
            "in a requests room, priority weighs the turns of fair_by: set fair_by too",
        );
    }
    Fairness {
        by,
        priority: rules(p, &format!("{key}.priority"), r.priority.as_ref(), jwts),
        weight: priority_weight(p, key, r),
    }
}

/// `priority_weight` (both kinds): priority turns per normal one.
fn priority_weight(p: &mut Problems, key: &str, r: &RoomFile) -> u32 {
    r.priority_weight
        .and_then(|w| p.int_in(&format!("{key}.priority_weight"), w, 1, 1000))
        .unwrap_or(3) as u32
}

/// How long a sessions room's passes, tickets and windows last.
struct Lifetimes {
    session_ttl: Duration,
    session_max: Option<Duration>,
    poll_interval: Duration,
    heartbeat_timeout: Duration,
    rejoin_grace: Duration,
    claim_window: Duration,
    confirm_window: Duration,
}

/// The settings of a `sessions` room.
fn sessions(p: &mut Problems, key: &str, r: &RoomFile, jwts: &HashMap<String, usize>) -> Sessions {
    let l = lifetimes(p, key, r);
    let admit_rate = r.admit_rate.unwrap_or(0.0);
    if !admit_rate.is_finite() || !(0.0..=MAX_ADMIT_RATE).contains(&admit_rate) {
        p.add(
            format!("{key}.admit_rate"),
            format!(
                "must be between 0 (unlimited) and {MAX_ADMIT_RATE} per second, got {admit_rate}"
            ),
        );
    }
    let max_queue = r
        .max_queue
        .and_then(|n| p.int_in(&format!("{key}.max_queue"), n, 0, 100_000_000))
        .unwrap_or(0) as u32;
    Sessions {
        session_ttl: l.session_ttl,
        ticket_ttl: DEFAULT_TICKET_TTL,
        limits: limits(p, key, r.limits.as_ref()),
        challenge: challenge(p, key, r),
        bind: bind(p, key, r.bind.as_deref()),
        session_max: l.session_max,
        admit_rate,
        max_queue,
        poll_interval: l.poll_interval,
        heartbeat_timeout: l.heartbeat_timeout,
        rejoin_grace: l.rejoin_grace,
        claim_window: l.claim_window,
        confirm_window: l.confirm_window,
        queue_status: queue_status(p, key, r),
        state: state(p, key, r),
        avg_session: positive(p, key, "avg_session", &r.avg_session, l.session_ttl),
        page_template: r
            .page_template
            .as_deref()
            .map(|f| p.readable_file(&format!("{key}.page_template"), f)),
        language: language(p, key, r),
        cookie_path: cookie_path(p, key, r),
        priority: rules(p, &format!("{key}.priority"), r.priority.as_ref(), jwts),
        priority_weight: priority_weight(p, key, r),
        conversion: conversion(p, key, r),
        invite_only: invite_only(p, key, r),
        launches: launches(p, key, r),
        codes: r
            .codes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| codes(p, &format!("{key}.codes[{i}]"), c))
            .collect(),
    }
}

/// `invite_only`: needs codes to invite anyone with.
fn invite_only(p: &mut Problems, key: &str, r: &RoomFile) -> bool {
    let invite_only = r.invite_only.unwrap_or(false);
    if invite_only && r.codes.is_empty() {
        p.add(
            format!("{key}.invite_only"),
            "needs [[room.codes]]: without codes nobody could join",
        );
    }
    invite_only
}

/// Longest operator message, in characters.
const MAX_MESSAGE: usize = 500;

/// An operator's message to the line: short, one paragraph of text.
pub(super) fn message(p: &mut Problems, key: &str, text: &str) -> String {
    if text.chars().count() > MAX_MESSAGE || text.chars().any(char::is_control) {
        p.add(
            key,
            format!("must be at most {MAX_MESSAGE} characters, without control characters"),
        );
    }
    text.to_owned()
}

/// `[[room.event]]`: each checked on its own, then in time order against
/// the one before, which it must not overlap.
fn launches(p: &mut Problems, key: &str, r: &RoomFile) -> Vec<Launch> {
    let mut launches: Vec<(usize, Launch)> = r
        .events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some((i, launch(p, &format!("{key}.event[{i}]"), e)?)))
        .collect();
    launches.sort_by_key(|(_, l)| l.prequeue_opens);
    for pair in launches.windows(2) {
        let ((i, before), (j, after)) = (&pair[0], &pair[1]);
        if before.name == after.name {
            p.add(
                format!("{key}.event[{j}].name"),
                format!("{:?} names event[{i}] already", after.name),
            );
        }
        if before.ends.is_none_or(|ends| ends > after.prequeue_opens) {
            p.add(
                format!("{key}.event[{j}].prequeue_opens"),
                format!(
                    "overlaps event[{i}] ({:?}), which {}: an event's pre-queue opens after the one before has ended",
                    before.name,
                    match before.ends {
                        Some(ends) => format!("ends at {}", humantime::format_rfc3339(ends)),
                        None => "has no end".to_owned(),
                    }
                ),
            );
        }
    }
    launches.into_iter().map(|(_, l)| l).collect()
}

/// A time of an event: RFC 3339 in UTC, e.g. `2027-03-01T10:00:00Z`.
fn instant(p: &mut Problems, key: &str, text: &str) -> Option<SystemTime> {
    match humantime::parse_rfc3339(text) {
        Ok(t) => Some(t),
        Err(e) => {
            p.add(
                key,
                format!(
                    "{text:?} is not a time ({e}): write it in UTC as \"2027-03-01T10:00:00Z\""
                ),
            );
            None
        }
    }
}

/// One `[[room.event]]`.
fn launch(p: &mut Problems, key: &str, e: &LaunchFile) -> Option<Launch> {
    p.name(&format!("{key}.name"), &e.name);
    let prequeue_opens = instant(p, &format!("{key}.prequeue_opens"), &e.prequeue_opens);
    let starts = instant(p, &format!("{key}.starts"), &e.starts);
    let ends = match &e.ends {
        Some(text) => Some(instant(p, &format!("{key}.ends"), text)?),
        None => None,
    };
    let (prequeue_opens, starts) = (prequeue_opens?, starts?);
    if prequeue_opens > starts {
        p.add(
            format!("{key}.prequeue_opens"),
            "must be at or before starts",
        );
    }
    if ends.is_some_and(|ends| ends <= starts) {
        p.add(format!("{key}.ends"), "must be after starts");
    }
    let capacity = e.capacity.and_then(|c| {
        p.int_in(&format!("{key}.capacity"), c, 1, i64::from(MAX_CAPACITY))
            .map(|c| c as u32)
    });
    let admit_rate = e.admit_rate.filter(|rate| {
        let ok = rate.is_finite() && (0.0..=MAX_ADMIT_RATE).contains(rate);
        if !ok {
            p.add(
                format!("{key}.admit_rate"),
                format!(
                    "must be between 0 (unlimited) and {MAX_ADMIT_RATE} per second, got {rate}"
                ),
            );
        }
        ok
    });
    Some(Launch {
        name: e.name.clone(),
        prequeue_opens,
        starts,
        ends,
        shuffle: e.shuffle.unwrap_or(true),
        capacity,
        admit_rate,
        page_template: e
            .page_template
            .as_deref()
            .map(|f| p.readable_file(&format!("{key}.page_template"), f)),
        message: e
            .message
            .as_deref()
            .map(|m| message(p, &format!("{key}.message"), m)),
    })
}

/// One `[[room.codes]]`: the file is read by `assets`, which names a bad line.
fn codes(p: &mut Problems, key: &str, c: &CodesFile) -> Option<Codes> {
    let lane = match c.lane.as_deref().unwrap_or("priority") {
        "priority" => CodeLane::Priority,
        "admit" => CodeLane::Admit,
        other => {
            p.add(
                format!("{key}.lane"),
                format!("{other:?} is not a lane: use \"priority\" or \"admit\""),
            );
            return None;
        }
    };
    let uses = c.uses.map_or(Some(1), |n| {
        p.int_in(&format!("{key}.uses"), n, 1, 1_000_000_000)
    })?;
    Some(Codes {
        file: p.readable_file(&format!("{key}.file"), &c.file),
        lane,
        uses: uses as u32,
    })
}

/// A duration of the room longer than zero, `default` if not given.
fn positive(
    p: &mut Problems,
    key: &str,
    field: &str,
    v: &Option<String>,
    default: Duration,
) -> Duration {
    p.positive(&format!("{key}.{field}"), v, default)
}

/// The lifetimes, each checked against those it must outlast.
fn lifetimes(p: &mut Problems, key: &str, r: &RoomFile) -> Lifetimes {
    let session_ttl = positive(
        p,
        key,
        "session_ttl",
        &r.session_ttl,
        Duration::from_secs(300),
    );
    let session_max = r
        .session_max
        .as_ref()
        .map(|_| positive(p, key, "session_max", &r.session_max, Duration::ZERO));
    let poll_interval = positive(
        p,
        key,
        "poll_interval",
        &r.poll_interval,
        Duration::from_secs(5),
    );
    let l = Lifetimes {
        session_ttl,
        session_max,
        poll_interval,
        heartbeat_timeout: positive(
            p,
            key,
            "heartbeat_timeout",
            &r.heartbeat_timeout,
            poll_interval * 3,
        ),
        rejoin_grace: positive(
            p,
            key,
            "rejoin_grace",
            &r.rejoin_grace,
            Duration::from_secs(300),
        ),
        claim_window: positive(
            p,
            key,
            "claim_window",
            &r.claim_window,
            Duration::from_secs(10),
        ),
        confirm_window: positive(
            p,
            key,
            "confirm_window",
            &r.confirm_window,
            (poll_interval * 2).max(Duration::from_secs(30)),
        ),
    };
    check_lifetimes(p, key, &l);
    l
}

/// Each lifetime against those it must outlast.
fn check_lifetimes(p: &mut Problems, key: &str, l: &Lifetimes) {
    let rules = [
        (
            "session_max",
            l.session_max.is_some_and(|max| max < l.session_ttl),
            "must be at least session_ttl",
        ),
        (
            "heartbeat_timeout",
            l.heartbeat_timeout <= l.poll_interval,
            "must be longer than poll_interval, or every waiting visitor is dropped between two polls",
        ),
        (
            "rejoin_grace",
            l.rejoin_grace < l.heartbeat_timeout,
            "must be at least heartbeat_timeout",
        ),
        (
            "claim_window",
            l.claim_window < l.poll_interval,
            "must be at least poll_interval, or a visitor who polls on time can miss their turn",
        ),
        (
            "confirm_window",
            l.confirm_window < l.poll_interval * 2,
            "must be at least twice poll_interval, or a waiting page's first poll can come too late",
        ),
    ];
    for (field, broken, message) in rules {
        if broken {
            p.add(format!("{key}.{field}"), message);
        }
    }
}

/// `queue_status`: the waiting page's status.
fn queue_status(p: &mut Problems, key: &str, r: &RoomFile) -> u16 {
    match r.queue_status.unwrap_or(200) {
        s @ (200 | 202 | 429 | 503) => s as u16,
        other => {
            p.add(
                format!("{key}.queue_status"),
                format!("must be 200, 202, 429 or 503, got {other}"),
            );
            200
        }
    }
}

/// `state`: the room's state at start.
fn state(p: &mut Problems, key: &str, r: &RoomFile) -> State {
    match r.state.as_deref().map(|s| (s, State::parse(s))) {
        None => State::Active,
        Some((_, Some(state))) => state,
        Some((text, None)) => {
            p.add(
                format!("{key}.state"),
                format!(
                    "{text:?} is not a room state: use \"active\", \"paused\" or \"maintenance\""
                ),
            );
            State::Active
        }
    }
}

/// `language`. Which languages the page speaks is the page's business
/// (`assets` checks it); here only the shape of a language code.
fn language(p: &mut Problems, key: &str, r: &RoomFile) -> Option<String> {
    match r.language.as_deref() {
        None | Some("auto") => None,
        Some(code)
            if !code.is_empty()
                && code.len() <= 8
                && code.bytes().all(|b| b.is_ascii_lowercase()) =>
        {
            Some(code.to_owned())
        }
        Some(other) => {
            p.add(
                format!("{key}.language"),
                format!("{other:?} is not a language code: use \"auto\" or a code such as \"en\""),
            );
            None
        }
    }
}

/// `cookie_path`: where the pass and ticket cookies are sent.
fn cookie_path(p: &mut Problems, key: &str, r: &RoomFile) -> String {
    let cookie_path = r.cookie_path.clone().unwrap_or_else(|| "/".to_owned());
    if !cookie_path.starts_with('/') || cookie_path.contains([';', ',', ' ']) {
        p.add(
            format!("{key}.cookie_path"),
            format!("{cookie_path:?} must start with '/' and contain no ';', ',' or spaces"),
        );
    }
    cookie_path
}

/// `[room.conversion]`.
fn conversion(p: &mut Problems, key: &str, r: &RoomFile) -> Option<Conversion> {
    let c = r.conversion.as_ref()?;
    let method = c.method.as_deref().unwrap_or("POST");
    let parsed = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).ok();
    if parsed.is_none() {
        p.add(
            format!("{key}.conversion.method"),
            format!("{method:?} is not an HTTP method"),
        );
    }
    if !c.path_prefix.starts_with('/') {
        p.add(
            format!("{key}.conversion.path_prefix"),
            format!("{:?} must start with '/'", c.path_prefix),
        );
    }
    Some(Conversion {
        method: parsed?,
        path_prefix: c.path_prefix.clone(),
    })
}

/// `[room.limits]`: off, but for status polls, unless set: per-network limits
/// turn away everyone behind one carrier-grade NAT.
fn limits(p: &mut Problems, key: &str, l: Option<&LimitsFile>) -> Limits {
    let none = LimitsFile::default();
    let l = l.unwrap_or(&none);
    let count = |p: &mut Problems, field: &str, v: Option<i64>, default: u32| {
        v.and_then(|n| p.int_in(&format!("{key}.limits.{field}"), n, 0, 10_000_000))
            .map_or(default, |n| n as u32)
    };
    let prefix = |p: &mut Problems, field: &str, v: Option<i64>, max: u8| {
        v.and_then(|n| p.int_in(&format!("{key}.limits.{field}"), n, 1, i64::from(max)))
            .map_or(max, |n| n as u8)
    };
    Limits {
        tickets_per_client: count(p, "tickets_per_client", l.tickets_per_client, 0),
        arrivals_per_minute: count(p, "arrivals_per_minute", l.arrivals_per_minute, 0),
        polls_per_minute: count(p, "polls_per_minute", l.polls_per_minute, 120),
        streams_per_ticket: count(p, "streams_per_ticket", l.streams_per_ticket, 2),
        streams_per_client: count(p, "streams_per_client", l.streams_per_client, 100),
        unknown_clients: unknown_clients(p, key, l.unknown_clients.as_deref()),
        prefix_v4: prefix(p, "client_prefix_v4", l.client_prefix_v4, 32),
        prefix_v6: if l.client_prefix_v6.is_none() {
            64
        } else {
            prefix(p, "client_prefix_v6", l.client_prefix_v6, 128)
        },
    }
}

/// `[room.limits] unknown_clients`.
fn unknown_clients(p: &mut Problems, key: &str, v: Option<&str>) -> UnknownClients {
    match v {
        None | Some("share") => UnknownClients::Share,
        Some("peer") => UnknownClients::Peer,
        Some("refuse") => UnknownClients::Refuse,
        Some(other) => {
            p.add(
                format!("{key}.limits.unknown_clients"),
                format!("{other:?} is not a choice: use \"share\", \"peer\" or \"refuse\""),
            );
            UnknownClients::Share
        }
    }
}

/// `challenge` and `challenge_difficulty`.
fn challenge(p: &mut Problems, key: &str, r: &RoomFile) -> Option<ProofOfWork> {
    let difficulty = r.challenge_difficulty.and_then(|d| {
        p.int_in(
            &format!("{key}.challenge_difficulty"),
            d,
            MIN_POW_BITS,
            MAX_POW_BITS,
        )
    });
    match r.challenge.as_deref() {
        None | Some("none") => {
            if r.challenge_difficulty.is_some() {
                p.add(
                    format!("{key}.challenge_difficulty"),
                    "only applies with challenge = \"pow\"",
                );
            }
            None
        }
        Some("pow") => Some(ProofOfWork {
            difficulty: difficulty.map_or(DEFAULT_POW_BITS, |d| d as u8),
        }),
        Some(other) => {
            p.add(
                format!("{key}.challenge"),
                format!("{other:?} is not a challenge: use \"none\" or \"pow\""),
            );
            None
        }
    }
}

fn bind(p: &mut Problems, key: &str, v: Option<&str>) -> Bind {
    match v {
        None | Some("none") => Bind::None,
        Some("user_agent") => Bind::UserAgent,
        Some("user_agent_and_network") => Bind::UserAgentAndNetwork,
        Some(other) => {
            p.add(
                format!("{key}.bind"),
                format!(
                    "{other:?} is not a binding: use \"none\", \"user_agent\" or \"user_agent_and_network\""
                ),
            );
            Bind::None
        }
    }
}

/// Two sessions rooms with the same cookie path would overwrite each other's passes.
fn check_cookie_paths(p: &mut Problems, rooms: &[Room]) {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (i, room) in rooms.iter().enumerate() {
        let Some(s) = room.sessions() else { continue };
        if let Some(other) = seen.insert(&s.cookie_path, &room.name) {
            p.add(
                format!("room[{i}].cookie_path"),
                format!("{:?} is already used by room {other:?}; sessions rooms on one host need different cookie paths", s.cookie_path),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::de::{self, Deserialize, Visitor};

    use super::*;

    /// A deserializer that only records the field names a struct asks for.
    struct FieldNames(&'static [&'static str]);

    impl<'de> de::Deserializer<'de> for &mut FieldNames {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("only a struct's field names are read"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(de::Error::custom("field names read"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    /// Every key `[[room]]` can take, as `RoomFile` declares them.
    fn room_keys() -> &'static [&'static str] {
        let mut names = FieldNames(&[]);
        let _ = RoomFile::deserialize(&mut names);
        names.0
    }

    #[test]
    fn every_room_key_belongs_to_a_kind() {
        let keys = room_keys();
        assert!(keys.len() > 30, "{keys:?}");
        let homeless: Vec<_> = keys.iter().filter(|k| kind_of_key(k).is_none()).collect();
        assert!(
            homeless.is_empty(),
            "room keys in none of COMMON_KEYS, REQUESTS_KEYS, SESSIONS_KEYS: {homeless:?}"
        );
        for list in [COMMON_KEYS, REQUESTS_KEYS, SESSIONS_KEYS] {
            for k in list {
                assert!(
                    keys.contains(k),
                    "{k} is listed but RoomFile has no such key"
                );
            }
        }
    }

    #[test]
    fn a_key_of_the_other_kind_is_refused_by_its_name() {
        for (mode, foreign) in [("requests", SESSIONS_KEYS), ("sessions", REQUESTS_KEYS)] {
            for k in foreign {
                // Each key given on its own, with a value of its type.
                let value = match *k {
                    "adaptive" | "invite_only" => "true",
                    "event" => {
                        "[{ name = \"e\", prequeue_opens = \"2027-03-01T09:45:00Z\", starts = \"2027-03-01T10:00:00Z\" }]"
                    }
                    "codes" => "[{ file = \"Cargo.toml\" }]",
                    "admit_rate" => "1.0",
                    "limits" => "{ polls_per_minute = 5 }",
                    "conversion" => "{ path_prefix = \"/x\" }",
                    "max_queue"
                    | "queue_status"
                    | "tokens_per_minute"
                    | "token_estimate"
                    | "min_capacity"
                    | "challenge_difficulty" => "1",
                    _ => "\"1s\"",
                };
                let text =
                    format!("name = \"r\"\nmode = \"{mode}\"\ncapacity = 1\n{k} = {value}\n");
                let file: RoomFile = toml::from_str(&text).unwrap();
                assert_eq!(given_keys(&file).len(), 4, "{text}");
                let mut p = Problems::default();
                let _ = room(&mut p, 0, &file, &HashMap::new());
                assert!(
                    p.0.iter()
                        .any(|problem| problem.key == format!("room[0].{k}")
                            && problem.message.starts_with("only applies to rooms in")),
                    "{mode} room with {k}: {:?}",
                    p.0
                );
            }
        }
    }
}
