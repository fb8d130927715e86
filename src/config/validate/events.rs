//! `[events]`: the event buffer and its sinks.

use std::path::PathBuf;
use std::time::Duration;

use super::checks::Problems;
use crate::config::file::{EventsFile, SinkFile};
use crate::config::{Events, OnFull, Secret, Sink, SinkKind};

/// Most events a sink may hold undelivered.
const MAX_EVENT_BUFFER: i64 = 10_000_000;

/// The keys each kind of sink takes besides `kind` and `name`.
const SINK_KEYS: &[(&str, &[&str])] = &[
    ("redis", &["url", "stream", "maxlen"]),
    ("file", &["path", "max_bytes"]),
    ("nats", &["url", "subject", "stream", "create_stream"]),
    ("webhook", &["url", "secret_file"]),
];

pub(super) fn events(p: &mut Problems, e: &EventsFile, state_dir: Option<PathBuf>) -> Events {
    let on_full = match e.on_full.as_deref() {
        None | Some("spill") => OnFull::Spill,
        Some("drop") => OnFull::Drop,
        Some(other) => {
            p.add(
                "events.on_full",
                format!(
                    "{other:?} is not a policy: use \"spill\" (to the dead-letter file) or \"drop\""
                ),
            );
            OnFull::Spill
        }
    };
    let instance = match &e.instance {
        Some(name) => {
            p.name("events.instance", name);
            name.clone()
        }
        None => default_instance(),
    };
    let mut names: Vec<String> = Vec::new();
    let sinks: Vec<Sink> = e
        .sink
        .iter()
        .enumerate()
        .filter_map(|(i, s)| sink(p, i, s, &mut names))
        .collect();
    let dead_letter_dir = match (&e.dead_letter_dir, state_dir) {
        // Made at start if missing, like state_dir.
        (Some(dir), _) => Some(PathBuf::from(dir)),
        (None, Some(state)) => Some(state.join("events")),
        (None, None) => None,
    };
    if !sinks.is_empty() && dead_letter_dir.is_none() {
        p.add(
            "events.dead_letter_dir",
            "needed with sinks (or [store] state_dir, under which events/ is used): events that cannot be delivered are kept there",
        );
    }
    let delivery = delivery(p, e);
    Events {
        buffer: e
            .buffer
            .and_then(|n| p.int_in("events.buffer", n, 1, MAX_EVENT_BUFFER))
            .map_or(100_000, |n| n as usize),
        on_full,
        dead_letter_dir,
        batch: e
            .batch
            .and_then(|n| p.int_in("events.batch", n, 1, 10_000))
            .map_or(1000, |n| n as usize),
        flush_interval: delivery.flush_interval,
        max_attempts: e
            .max_attempts
            .and_then(|n| p.int_in("events.max_attempts", n, 1, 100))
            .map_or(5, |n| n as u32),
        retry_base: delivery.retry_base,
        retry_max: delivery.retry_max,
        timeout: delivery.timeout,
        ready_requires_sinks: e.ready_requires_sinks.unwrap_or(false),
        instance,
        sinks,
    }
}

/// How often and how patiently events are delivered.
struct Delivery {
    flush_interval: Duration,
    retry_base: Duration,
    retry_max: Duration,
    timeout: Duration,
}

fn delivery(p: &mut Problems, e: &EventsFile) -> Delivery {
    let flush_interval = p.duration(
        "events.flush_interval",
        e.flush_interval.as_deref(),
        Duration::from_millis(500),
    );
    if flush_interval < Duration::from_millis(1) {
        p.add(
            "events.flush_interval",
            "must be at least 1ms (each sink's buffer goes out this often)",
        );
    }
    let retry_base = p.duration(
        "events.retry_base",
        e.retry_base.as_deref(),
        Duration::from_millis(200),
    );
    let retry_max = p.duration(
        "events.retry_max",
        e.retry_max.as_deref(),
        Duration::from_secs(30),
    );
    if retry_max < retry_base {
        p.add("events.retry_max", "must be at least retry_base");
    }
    Delivery {
        flush_interval,
        retry_base,
        retry_max,
        timeout: p.positive("events.timeout", &e.timeout, Duration::from_secs(5)),
    }
}

/// `[[events.sink]]` number `i`; `names` are those of the sinks before it.
fn sink(p: &mut Problems, i: usize, s: &SinkFile, names: &mut Vec<String>) -> Option<Sink> {
    let key = |k: &str| format!("events.sink[{i}].{k}");
    let name = s.name.clone().unwrap_or_else(|| format!("{}-{i}", s.kind));
    p.name(&key("name"), &name);
    if names.contains(&name) {
        p.add(key("name"), format!("{name:?} names another sink already"));
    }
    names.push(name.clone());
    let Some((_, keys)) = SINK_KEYS.iter().find(|(kind, _)| *kind == s.kind) else {
        p.add(
            key("kind"),
            format!(
                "{:?} is not a sink: use \"nats\", \"redis\", \"webhook\" or \"file\"",
                s.kind
            ),
        );
        return None;
    };
    // A key of another kind of sink is refused by the same lists.
    for given in toml::Table::try_from(s)
        .map(|t| t.into_iter().map(|(k, _)| k))
        .into_iter()
        .flatten()
    {
        if !matches!(given.as_str(), "kind" | "name") && !keys.contains(&given.as_str()) {
            p.add(
                key(&given),
                format!("does not apply to kind = {:?}", s.kind),
            );
        }
    }
    let kind = match s.kind.as_str() {
        "redis" => redis_sink(p, &key, s),
        "file" => file_sink(p, &key, s)?,
        "nats" => nats_sink(p, &key, s),
        _ => webhook_sink(p, &key, s)?,
    };
    Some(Sink { name, kind })
}

fn redis_sink(p: &mut Problems, key: &dyn Fn(&str) -> String, s: &SinkFile) -> SinkKind {
    let url = s.url.clone().unwrap_or_default();
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        p.add(key("url"), "a redis:// or rediss:// URL is needed");
    }
    refuse_credentials(p, &key("url"), &url);
    let stream = s
        .stream
        .clone()
        .unwrap_or_else(|| "anteroom:events".to_owned());
    if stream.is_empty() {
        p.add(key("stream"), "must not be empty");
    }
    let maxlen = s
        .maxlen
        .and_then(|n| p.int_in(&key("maxlen"), n, 1, i64::MAX))
        .map_or(1_000_000, |n| n as u64);
    SinkKind::Redis {
        url,
        stream,
        maxlen,
    }
}

fn file_sink(p: &mut Problems, key: &dyn Fn(&str) -> String, s: &SinkFile) -> Option<SinkKind> {
    let Some(path) = s.path.as_deref().filter(|p| !p.is_empty()) else {
        p.add(key("path"), "a file to write events to is needed");
        return None;
    };
    let max_bytes = s
        .max_bytes
        .and_then(|n| p.int_in(&key("max_bytes"), n, 0, i64::MAX))
        .map_or(0, |n| n as u64);
    // Its directory is made at start, like state_dir.
    Some(SinkKind::File {
        path: PathBuf::from(path),
        max_bytes,
    })
}

fn nats_sink(p: &mut Problems, key: &dyn Fn(&str) -> String, s: &SinkFile) -> SinkKind {
    let url = s.url.clone().unwrap_or_default();
    if !(url.starts_with("nats://") || url.starts_with("tls://")) {
        p.add(key("url"), "a nats:// or tls:// URL is needed");
    }
    refuse_credentials(p, &key("url"), &url);
    let subject = s
        .subject
        .clone()
        .unwrap_or_else(|| "anteroom.events".to_owned());
    let token_ok = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    };
    if !subject.split('.').all(token_ok) {
        p.add(key("subject"), format!("{subject:?} is not a subject prefix: dot-separated tokens of letters, digits, '-' and '_'"));
    }
    let stream = s
        .stream
        .clone()
        .unwrap_or_else(|| "ANTEROOM_EVENTS".to_owned());
    if !token_ok(&stream) {
        p.add(
            key("stream"),
            format!("{stream:?} is not a JetStream stream name: letters, digits, '-' and '_'"),
        );
    }
    SinkKind::Nats {
        url,
        subject,
        stream,
        create_stream: s.create_stream.unwrap_or(true),
    }
}

fn webhook_sink(p: &mut Problems, key: &dyn Fn(&str) -> String, s: &SinkFile) -> Option<SinkKind> {
    let url = s.url.clone().unwrap_or_default();
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        p.add(key("url"), "an https:// (or http://) URL is needed");
    }
    let secret = match s.secret_file.as_deref() {
        None => {
            p.add(
                key("secret_file"),
                "a file with the HMAC key that signs each delivery is needed",
            );
            return None;
        }
        Some(path) => p.secret_file(&key("secret_file"), path)?,
    };
    if secret.len() < 16 {
        p.add(key("secret_file"), "the key must be at least 16 characters");
        return None;
    }
    Some(SinkKind::Webhook {
        url,
        secret: Secret::new(secret),
    })
}

/// Credentials in a URL would reach logs and `/admin/config` with it.
fn refuse_credentials(p: &mut Problems, key: &str, url: &str) {
    let authority = url
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
    if authority.contains('@') {
        p.add(key, "must not hold credentials (they would be logged); use a server reachable without them on a private network");
    }
}

/// The host's name, else a random one: what tells instances apart in events.
fn default_instance() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.len() <= 64)
        .unwrap_or_else(|| format!("anteroom-{:08x}", rand::random::<u32>()))
}
