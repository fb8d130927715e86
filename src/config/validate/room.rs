//! `[[room]]`: a capacity and, by its kind, how it is shared.

use std::collections::HashMap;
use std::time::Duration;

use super::checks::{DEFAULT_TICKET_TTL, Problems, rules};
use crate::config::file::{LimitsFile, RoomFile};
use crate::config::{
    AdaptiveLimit, Bind, Conversion, FairBy, Fairness, Limits, MAX_ADMIT_RATE, MAX_CAPACITY,
    OnStoreError, ProofOfWork, Rate, Room, RoomMode, Sessions, State, TokenBudget, UnknownClients,
};

const MAX_POW_BITS: i64 = 28;

const MIN_POW_BITS: i64 = 8;

/// Proof of work: 16 bits take a browser well under a second, 28 bits
/// minutes; below 8 it stops nobody.
const DEFAULT_POW_BITS: u8 = 16;

const MAX_WAIT_LIMIT: Duration = Duration::from_secs(300);

pub(super) fn room(
    p: &mut Problems,
    i: usize,
    r: &RoomFile,
    jwts: &HashMap<String, usize>,
) -> Option<Room> {
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
    let tokens = match (r.tokens_per_minute, r.token_estimate) {
        (None, None) => None,
        (None, Some(_)) => {
            p.add(
                format!("{key}.token_estimate"),
                "only applies with tokens_per_minute",
            );
            None
        }
        (Some(tpm), estimate) => {
            let per_minute = p.int_in(&format!("{key}.tokens_per_minute"), tpm, 1, 100_000_000);
            let estimate = match (per_minute, estimate) {
                (Some(max), Some(e)) => p.int_in(&format!("{key}.token_estimate"), e, 1, max),
                (Some(max), None) => Some(1000.min(max)),
                (None, _) => None,
            };
            match (per_minute, estimate) {
                (Some(per_minute), Some(estimate)) => Some(TokenBudget {
                    per_minute: per_minute as u32,
                    estimate: estimate as u32,
                }),
                _ => None,
            }
        }
    };
    let usage_key = r.usage_path.as_deref().and_then(|path| {
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
    });
    let adaptive = match (r.adaptive, r.min_capacity) {
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
    };
    let fair_by = match r.fair_by.as_deref() {
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
    let fair = if mode == Some(RoomMode::Requests) {
        let priority = rules(p, &format!("{key}.priority"), r.priority.as_ref(), jwts);
        let weight = r
            .priority_weight
            .and_then(|w| p.int_in(&format!("{key}.priority_weight"), w, 1, 1000))
            .unwrap_or(3) as u32;
        if fair_by == FairBy::None && (r.priority.is_some() || r.priority_weight.is_some()) {
            p.add(
                format!("{key}.priority"),
                "in a requests room, priority weighs the turns of fair_by: set fair_by too",
            );
        }
        Fairness {
            by: fair_by,
            priority,
            weight,
        }
    } else {
        for (field, given) in [
            ("adaptive", r.adaptive.is_some()),
            ("fair_by", r.fair_by.is_some()),
        ] {
            if given {
                p.add(
                    format!("{key}.{field}"),
                    "only applies to rooms in \"requests\" mode",
                );
            }
        }
        Fairness::default()
    };
    if mode == Some(RoomMode::Sessions) && r.tokens_per_minute.is_some() {
        p.add(
            format!("{key}.tokens_per_minute"),
            "tokens_per_minute applies to rooms in \"requests\" mode",
        );
    }
    if mode == Some(RoomMode::Sessions) && r.rate.is_some() {
        p.add(
            format!("{key}.rate"),
            "rate applies to rooms in \"requests\" mode; a sessions room has admit_rate",
        );
    }
    if mode == Some(RoomMode::Sessions) && r.max_wait.is_some() {
        p.add(
            format!("{key}.max_wait"),
            "max_wait applies to rooms in \"requests\" mode; a sessions room queues visitors instead",
        );
    }
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
    let sessions = match mode? {
        RoomMode::Sessions => Some(sessions(p, &key, r, jwts)),
        RoomMode::Requests => {
            let sessions_only = [
                ("session_ttl", r.session_ttl.is_some()),
                ("session_max", r.session_max.is_some()),
                ("admit_rate", r.admit_rate.is_some()),
                ("max_queue", r.max_queue.is_some()),
                ("poll_interval", r.poll_interval.is_some()),
                ("heartbeat_timeout", r.heartbeat_timeout.is_some()),
                ("rejoin_grace", r.rejoin_grace.is_some()),
                ("claim_window", r.claim_window.is_some()),
                ("confirm_window", r.confirm_window.is_some()),
                ("queue_status", r.queue_status.is_some()),
                ("state", r.state.is_some()),
                ("avg_session", r.avg_session.is_some()),
                ("page_template", r.page_template.is_some()),
                ("language", r.language.is_some()),
                ("cookie_path", r.cookie_path.is_some()),
                ("conversion", r.conversion.is_some()),
                ("limits", r.limits.is_some()),
                ("challenge", r.challenge.is_some()),
                ("challenge_difficulty", r.challenge_difficulty.is_some()),
                ("bind", r.bind.is_some()),
            ];
            for (field, given) in sessions_only {
                if given {
                    p.add(
                        format!("{key}.{field}"),
                        "only applies to rooms in \"sessions\" mode",
                    );
                }
            }
            None
        }
    };
    Some(Room {
        name: r.name.clone(),
        mode: mode?,
        capacity: capacity? as u32,
        max_wait,
        rate,
        tokens,
        usage_key,
        adaptive,
        fair,
        bypass,
        on_store_error,
        sessions,
    })
}

fn sessions(p: &mut Problems, key: &str, r: &RoomFile, jwts: &HashMap<String, usize>) -> Sessions {
    let d = |p: &mut Problems, field: &str, v: &Option<String>, default: Duration| {
        let value = p.duration(&format!("{key}.{field}"), v.as_deref(), default);
        if value.is_zero() {
            p.add(format!("{key}.{field}"), "must be longer than 0");
        }
        value
    };
    let session_ttl = d(p, "session_ttl", &r.session_ttl, Duration::from_secs(300));
    let session_max = r
        .session_max
        .as_ref()
        .map(|_| d(p, "session_max", &r.session_max, Duration::ZERO));
    if let Some(max) = session_max {
        if max < session_ttl {
            p.add(format!("{key}.session_max"), "must be at least session_ttl");
        }
    }
    let poll_interval = d(p, "poll_interval", &r.poll_interval, Duration::from_secs(5));
    let heartbeat_timeout = d(
        p,
        "heartbeat_timeout",
        &r.heartbeat_timeout,
        poll_interval * 3,
    );
    if heartbeat_timeout <= poll_interval {
        p.add(
            format!("{key}.heartbeat_timeout"),
            "must be longer than poll_interval, or every waiting visitor is dropped between two polls",
        );
    }
    let rejoin_grace = d(p, "rejoin_grace", &r.rejoin_grace, Duration::from_secs(300));
    if rejoin_grace < heartbeat_timeout {
        p.add(
            format!("{key}.rejoin_grace"),
            "must be at least heartbeat_timeout",
        );
    }
    let claim_window = d(p, "claim_window", &r.claim_window, Duration::from_secs(10));
    if claim_window < poll_interval {
        p.add(
            format!("{key}.claim_window"),
            "must be at least poll_interval, or a visitor who polls on time can miss their turn",
        );
    }
    let confirm_window = d(
        p,
        "confirm_window",
        &r.confirm_window,
        (poll_interval * 2).max(Duration::from_secs(30)),
    );
    if confirm_window < poll_interval * 2 {
        p.add(
            format!("{key}.confirm_window"),
            "must be at least twice poll_interval, or a waiting page's first poll can come too late",
        );
    }
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
    let queue_status = match r.queue_status.unwrap_or(200) {
        s @ (200 | 202 | 429 | 503) => s as u16,
        other => {
            p.add(
                format!("{key}.queue_status"),
                format!("must be 200, 202, 429 or 503, got {other}"),
            );
            200
        }
    };
    let state = match r.state.as_deref().map(|s| (s, State::parse(s))) {
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
    };
    // Which languages the page speaks is the page's business (`assets`
    // checks it); here only the shape of a language code.
    let language = match r.language.as_deref() {
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
    };
    let cookie_path = r.cookie_path.clone().unwrap_or_else(|| "/".to_owned());
    if !cookie_path.starts_with('/') || cookie_path.contains([';', ',', ' ']) {
        p.add(
            format!("{key}.cookie_path"),
            format!("{cookie_path:?} must start with '/' and contain no ';', ',' or spaces"),
        );
    }
    let page_template = r
        .page_template
        .as_deref()
        .map(|f| p.readable_file(&format!("{key}.page_template"), f));
    let priority_weight = r
        .priority_weight
        .and_then(|w| p.int_in(&format!("{key}.priority_weight"), w, 1, 1000))
        .unwrap_or(3) as u32;
    let conversion = r.conversion.as_ref().and_then(|c| {
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
    });
    Sessions {
        session_ttl,
        ticket_ttl: DEFAULT_TICKET_TTL,
        limits: limits(p, key, r.limits.as_ref()),
        challenge: challenge(p, key, r),
        bind: bind(p, key, r.bind.as_deref()),
        session_max,
        admit_rate,
        max_queue,
        poll_interval,
        heartbeat_timeout,
        rejoin_grace,
        claim_window,
        confirm_window,
        queue_status,
        state,
        avg_session: d(p, "avg_session", &r.avg_session, session_ttl),
        page_template,
        language,
        cookie_path,
        priority: rules(p, &format!("{key}.priority"), r.priority.as_ref(), jwts),
        priority_weight,
        conversion,
    }
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
pub(super) fn check_cookie_paths(p: &mut Problems, rooms: &[Room]) {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (i, room) in rooms.iter().enumerate() {
        let Some(s) = &room.sessions else { continue };
        if let Some(other) = seen.insert(&s.cookie_path, &room.name) {
            p.add(
                format!("room[{i}].cookie_path"),
                format!("{:?} is already used by room {other:?}; sessions rooms on one host need different cookie paths", s.cookie_path),
            );
        }
    }
}
