//! `[store]`: the embedded store or Redis, in one of its three deployments.

use std::path::PathBuf;
use std::time::Duration;

use super::checks::Problems;
use crate::config::file::StoreFile;
use crate::config::{Backend, Deployment, RedisConfig, StateDir, StoreConfig};

/// Keys of `[store]` that only `backend = "redis"` takes.
const REDIS_KEYS: &[&str] = &[
    "url",
    "sentinels",
    "sentinel_master",
    "sentinel_username",
    "sentinel_password",
    "sentinel_password_file",
    "cluster_nodes",
    "username",
    "password",
    "password_file",
    "key_prefix",
    "connections",
    "timeout",
    "connect_timeout",
    "lease",
    "ca_file",
];

pub(super) fn store(p: &mut Problems, s: &StoreFile) -> StoreConfig {
    let backend = match s.backend.as_deref().unwrap_or("memory") {
        "memory" => {
            let given = toml::Table::try_from(s).map(|t| t.into_iter().map(|(k, _)| k));
            for key in given.into_iter().flatten() {
                if REDIS_KEYS.contains(&key.as_str()) {
                    p.add(
                        format!("store.{key}"),
                        "only applies to backend = \"redis\"",
                    );
                }
            }
            Backend::Memory
        }
        "redis" => Backend::Redis(Box::new(redis(p, s))),
        other => {
            p.add(
                "store.backend",
                format!("{other:?} is not a store: use \"memory\" or \"redis\""),
            );
            Backend::Memory
        }
    };
    let touch_default = match backend {
        Backend::Memory => Duration::from_secs(1),
        Backend::Redis(_) => Duration::from_secs(5),
    };
    let state = state(p, s, &backend);
    let touch_interval = p.positive("store.touch_interval", &s.touch_interval, touch_default);
    let rebuild_grace = p.duration(
        "store.rebuild_grace",
        s.rebuild_grace.as_deref(),
        Duration::from_secs(15).max(touch_interval),
    );
    if !rebuild_grace.is_zero() && rebuild_grace < touch_interval {
        p.add(
            "store.rebuild_grace",
            format!(
                "{} is shorter than store.touch_interval ({}): a visitor with a pass reaches the store at most that often, so not all could be back in time (\"0s\" turns the hold off)",
                humantime::format_duration(rebuild_grace),
                humantime::format_duration(touch_interval)
            ),
        );
    }
    StoreConfig {
        backend,
        sweep_interval: p.positive(
            "store.sweep_interval",
            &s.sweep_interval,
            Duration::from_secs(1),
        ),
        touch_interval,
        rebuild_grace,
        state,
    }
}

/// `state_dir` and `snapshot_interval`: the memory store kept on disk.
fn state(p: &mut Problems, s: &StoreFile, backend: &Backend) -> Option<StateDir> {
    let interval = p.positive(
        "store.snapshot_interval",
        &s.snapshot_interval,
        Duration::from_secs(1),
    );
    match (&s.state_dir, backend) {
        (None, _) => {
            if s.snapshot_interval.is_some() {
                p.add(
                    "store.snapshot_interval",
                    "only applies with store.state_dir",
                );
            }
            None
        }
        (Some(_), Backend::Redis(_)) => {
            p.add(
                "store.state_dir",
                "only applies to backend = \"memory\" (Redis keeps the state itself)",
            );
            None
        }
        (Some(dir), Backend::Memory) if dir.trim().is_empty() => {
            p.add("store.state_dir", "must not be empty");
            None
        }
        (Some(dir), Backend::Memory) => {
            let dir = PathBuf::from(dir);
            if dir.exists() && !dir.is_dir() {
                p.add(
                    "store.state_dir",
                    format!("{} exists and is not a directory", dir.display()),
                );
            }
            Some(StateDir { dir, interval })
        }
    }
}

/// A Redis URL: `redis://` or `rediss://`, without credentials; `server`:
/// a database number may follow (Sentinel and Cluster nodes take none).
fn redis_url(p: &mut Problems, key: &str, url: &str, server: bool) {
    match redis::parse_redis_url(url) {
        Some(parsed) if matches!(parsed.scheme(), "redis" | "rediss") => {
            if !parsed.username().is_empty() || parsed.password().is_some() {
                p.add(key, "put credentials in store.username and store.password (or password_file), not in the URL, so they stay out of logs");
            }
            if !server && !matches!(parsed.path(), "" | "/" | "/0") {
                p.add(
                    key,
                    format!(
                        "{url:?}: no database number here (Sentinel and Cluster use database 0)"
                    ),
                );
            }
        }
        _ => {
            // Never echo a URL that may hold a password.
            let shown = if url.contains('@') {
                "the URL".to_owned()
            } else {
                format!("{url:?}")
            };
            p.add(
                key,
                format!(
                    "{shown} is not a redis:// or rediss:// URL (e.g. \"redis://127.0.0.1:6379/0\")"
                ),
            );
        }
    }
}

/// A list of node URLs: at least one, all well formed, all with or all without TLS.
fn redis_nodes(p: &mut Problems, key: &str, nodes: &[String]) -> Vec<String> {
    if nodes.is_empty() {
        p.add(format!("store.{key}"), "give at least one node");
    }
    for (i, url) in nodes.iter().enumerate() {
        redis_url(p, &format!("store.{key}[{i}]"), url, false);
    }
    let tls = nodes.iter().filter(|u| u.starts_with("rediss://")).count();
    if tls != 0 && tls != nodes.len() {
        p.add(
            format!("store.{key}"),
            "use rediss:// for every node or for none",
        );
    }
    nodes.to_vec()
}

/// Where the Redis data is: `url`, `sentinels` + `sentinel_master`, or `cluster_nodes`.
fn deployment(p: &mut Problems, s: &StoreFile) -> Deployment {
    let given = [
        ("url", s.url.is_some()),
        ("sentinels", s.sentinels.is_some()),
        ("cluster_nodes", s.cluster_nodes.is_some()),
    ];
    if given.iter().filter(|(_, g)| *g).count() > 1 {
        let names: Vec<_> = given.iter().filter(|(_, g)| *g).map(|(k, _)| *k).collect();
        p.add(
            format!("store.{}", names[1]),
            format!(
                "give one of url, sentinels or cluster_nodes, not {}",
                names.join(" and ")
            ),
        );
    }
    if s.sentinels.is_none() {
        for (key, given) in [
            ("sentinel_master", s.sentinel_master.is_some()),
            ("sentinel_username", s.sentinel_username.is_some()),
            ("sentinel_password", s.sentinel_password.is_some()),
            ("sentinel_password_file", s.sentinel_password_file.is_some()),
        ] {
            if given {
                p.add(format!("store.{key}"), "only applies with store.sentinels");
            }
        }
    }
    if let Some(sentinels) = &s.sentinels {
        let master = s.sentinel_master.clone().unwrap_or_default();
        if master.is_empty() || master.contains(char::is_whitespace) {
            p.add(
                "store.sentinel_master",
                "the name the sentinels monitor the primary under is needed (e.g. \"mymaster\")",
            );
        }
        let password = p.secret(
            "store.sentinel_password",
            &s.sentinel_password,
            &s.sentinel_password_file,
        );
        return Deployment::Sentinel {
            sentinels: redis_nodes(p, "sentinels", sentinels),
            master,
            username: s.sentinel_username.clone(),
            password,
        };
    }
    if let Some(nodes) = &s.cluster_nodes {
        return Deployment::Cluster(redis_nodes(p, "cluster_nodes", nodes));
    }
    let url = s
        .url
        .clone()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".to_owned());
    redis_url(p, "store.url", &url, true);
    Deployment::Server(url)
}

fn redis(p: &mut Problems, s: &StoreFile) -> RedisConfig {
    let deployment = deployment(p, s);
    let password = p.secret("store.password", &s.password, &s.password_file);
    let key_prefix = s
        .key_prefix
        .clone()
        .unwrap_or_else(|| "anteroom".to_owned());
    if key_prefix.is_empty() || key_prefix.contains(['{', '}', ' ']) {
        p.add(
            "store.key_prefix",
            "must be non-empty without braces or spaces",
        );
    }
    let tls = deployment.tls();
    RedisConfig {
        deployment,
        username: s.username.clone(),
        password,
        key_prefix,
        connections: s
            .connections
            .and_then(|n| p.int_in("store.connections", n, 1, 64))
            .unwrap_or(2) as usize,
        timeout: p.positive("store.timeout", &s.timeout, Duration::from_millis(250)),
        connect_timeout: p.positive(
            "store.connect_timeout",
            &s.connect_timeout,
            Duration::from_secs(1),
        ),
        lease: p.positive("store.lease", &s.lease, Duration::from_secs(10)),
        ca_file: s.ca_file.as_deref().map(|f| {
            if !tls {
                p.add("store.ca_file", "ca_file is only used with rediss:// URLs");
            }
            p.readable_file("store.ca_file", f)
        }),
    }
}
