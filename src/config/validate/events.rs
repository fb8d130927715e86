//! `[events]`: the event buffer and its sinks.

use std::path::PathBuf;
use std::time::Duration;

use super::checks::Problems;
use crate::config::file::EventsFile;
use crate::config::{Events, OnFull, Secret, Sink, SinkKind};

/// Most events a sink may hold undelivered.
const MAX_EVENT_BUFFER: i64 = 10_000_000;

pub(super) fn events(p: &mut Problems, e: &EventsFile, state_dir: Option<PathBuf>) -> Events {
    let buffer = e
        .buffer
        .and_then(|n| p.int_in("events.buffer", n, 1, MAX_EVENT_BUFFER))
        .map_or(100_000, |n| n as usize);
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
    let batch = e
        .batch
        .and_then(|n| p.int_in("events.batch", n, 1, 10_000))
        .map_or(1000, |n| n as usize);
    let max_attempts = e
        .max_attempts
        .and_then(|n| p.int_in("events.max_attempts", n, 1, 100))
        .map_or(5, |n| n as u32);
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
    let timeout = p.duration(
        "events.timeout",
        e.timeout.as_deref(),
        Duration::from_secs(5),
    );
    if timeout.is_zero() {
        p.add("events.timeout", "must be longer than 0s");
    }
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
        .filter_map(|(i, s)| {
            let key = |k: &str| format!("events.sink[{i}].{k}");
            let name = s.name.clone().unwrap_or_else(|| format!("{}-{i}", s.kind));
            p.name(&key("name"), &name);
            if names.contains(&name) {
                p.add(key("name"), format!("{name:?} names another sink already"));
            }
            names.push(name.clone());
            let unused = |p: &mut Problems, fields: &[(&str, bool)]| {
                for (field, set) in fields {
                    if *set {
                        p.add(key(field), format!("does not apply to kind = {:?}", s.kind));
                    }
                }
            };
            let kind = match s.kind.as_str() {
                "redis" => {
                    unused(p, &[("subject", s.subject.is_some()), ("secret_file", s.secret_file.is_some()), ("path", s.path.is_some()), ("max_bytes", s.max_bytes.is_some()), ("create_stream", s.create_stream.is_some())]);
                    let url = s.url.clone().unwrap_or_default();
                    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                        p.add(key("url"), "a redis:// or rediss:// URL is needed");
                    }
                    refuse_credentials(p, &key("url"), &url);
                    let stream = s.stream.clone().unwrap_or_else(|| "anteroom:events".to_owned());
                    if stream.is_empty() {
                        p.add(key("stream"), "must not be empty");
                    }
                    let maxlen = s
                        .maxlen
                        .and_then(|n| p.int_in(&key("maxlen"), n, 1, i64::MAX))
                        .map_or(1_000_000, |n| n as u64);
                    SinkKind::Redis { url, stream, maxlen }
                }
                "file" => {
                    unused(p, &[("url", s.url.is_some()), ("subject", s.subject.is_some()), ("stream", s.stream.is_some()), ("maxlen", s.maxlen.is_some()), ("secret_file", s.secret_file.is_some()), ("create_stream", s.create_stream.is_some())]);
                    let Some(path) = s.path.as_deref().filter(|p| !p.is_empty()) else {
                        p.add(key("path"), "a file to write events to is needed");
                        return None;
                    };
                    // Its directory is made at start, like state_dir.
                    let path = PathBuf::from(path);
                    let max_bytes = s
                        .max_bytes
                        .and_then(|n| p.int_in(&key("max_bytes"), n, 0, i64::MAX))
                        .map_or(0, |n| n as u64);
                    SinkKind::File { path, max_bytes }
                }
                "nats" => {
                    unused(p, &[("secret_file", s.secret_file.is_some()), ("path", s.path.is_some()), ("max_bytes", s.max_bytes.is_some()), ("maxlen", s.maxlen.is_some())]);
                    let url = s.url.clone().unwrap_or_default();
                    if !(url.starts_with("nats://") || url.starts_with("tls://")) {
                        p.add(key("url"), "a nats:// or tls:// URL is needed");
                    }
                    refuse_credentials(p, &key("url"), &url);
                    let subject = s.subject.clone().unwrap_or_else(|| "anteroom.events".to_owned());
                    let token_ok = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
                    if !subject.split('.').all(token_ok) {
                        p.add(key("subject"), format!("{subject:?} is not a subject prefix: dot-separated tokens of letters, digits, '-' and '_'"));
                    }
                    let stream = s.stream.clone().unwrap_or_else(|| "ANTEROOM_EVENTS".to_owned());
                    if !token_ok(&stream) {
                        p.add(key("stream"), format!("{stream:?} is not a JetStream stream name: letters, digits, '-' and '_'"));
                    }
                    let create_stream = s.create_stream.unwrap_or(true);
                    SinkKind::Nats { url, subject, stream, create_stream }
                }
                "webhook" => {
                    unused(p, &[("subject", s.subject.is_some()), ("stream", s.stream.is_some()), ("path", s.path.is_some()), ("max_bytes", s.max_bytes.is_some()), ("maxlen", s.maxlen.is_some()), ("create_stream", s.create_stream.is_some())]);
                    let url = s.url.clone().unwrap_or_default();
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        p.add(key("url"), "an https:// (or http://) URL is needed");
                    }
                    let secret = match s.secret_file.as_deref() {
                        None => {
                            p.add(key("secret_file"), "a file with the HMAC key that signs each delivery is needed");
                            None
                        }
                        Some(path) => p.secret_file(&key("secret_file"), path),
                    };
                    let secret = match secret {
                        Some(text) if text.len() >= 16 => text,
                        Some(_) => {
                            p.add(key("secret_file"), "the key must be at least 16 characters");
                            return None;
                        }
                        None => return None,
                    };
                    SinkKind::Webhook { url, secret: Secret::new(secret) }
                }
                other => {
                    p.add(
                        key("kind"),
                        format!("{other:?} is not a sink: use \"nats\", \"redis\", \"webhook\" or \"file\""),
                    );
                    return None;
                }
            };
            Some(Sink { name, kind })
        })
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
    Events {
        buffer,
        on_full,
        dead_letter_dir,
        batch,
        flush_interval,
        max_attempts,
        retry_base,
        retry_max,
        timeout,
        ready_requires_sinks: e.ready_requires_sinks.unwrap_or(false),
        instance,
        sinks,
    }
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
