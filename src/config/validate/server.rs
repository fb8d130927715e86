//! `[server]`, `[admin]` and `[log]`: listeners, TLS and the process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::checks::{Problems, cidr};
use crate::config::file::{File, ServerFile, TlsListenFile};
use crate::config::{Admin, Hsts, Log, LogFormat, PathPolicy, Secret, Server, TlsListener};

/// Most open client connections a cap may allow.
const MAX_CONNECTIONS: i64 = 10_000_000;

const MIN_TOKEN_LEN: usize = 16;

/// `sun_path` holds 108 bytes with the terminating NUL.
const MAX_UNIX_SOCKET_PATH: usize = 107;

/// Where `--upgrade` receives the listening sockets unless `upgrade_sock` says.
const DEFAULT_UPGRADE_SOCK: &str = "/tmp/anteroom_upgrade.sock";

/// Longest `[log] level` filter.
const MAX_LOG_FILTER: usize = 512;

/// Longest HSTS `max-age` accepted: two years, what preload lists ask for at most.
const MAX_HSTS: Duration = Duration::from_secs(730 * 24 * 3600);

const MAX_THREADS: i64 = 1024;

/// A TLS listener's `hsts`, `hsts_include_subdomains` and `hsts_preload`.
/// Preloading asks browsers to hard-code the policy: the lists take only a
/// `max-age` of a year or more with `includeSubDomains`, so less is refused.
fn hsts(p: &mut Problems, key: &str, t: &TlsListenFile) -> Option<Hsts> {
    let Some(text) = t.hsts.as_deref() else {
        for (name, set) in [
            (
                "hsts_include_subdomains",
                t.hsts_include_subdomains.is_some(),
            ),
            ("hsts_preload", t.hsts_preload.is_some()),
        ] {
            if set {
                p.add(
                    format!("{key}.{name}"),
                    "only applies with hsts (its max-age)",
                );
            }
        }
        return None;
    };
    let max_age = p.duration(&format!("{key}.hsts"), Some(text), Duration::ZERO);
    if max_age > MAX_HSTS {
        p.add(format!("{key}.hsts"), "must be at most 2 years (\"730d\")");
    }
    let include_subdomains = t.hsts_include_subdomains.unwrap_or(false);
    let preload = t.hsts_preload.unwrap_or(false);
    if preload && !include_subdomains {
        p.add(
            format!("{key}.hsts_preload"),
            "needs hsts_include_subdomains = true (the preload lists ask for it)",
        );
    }
    if preload && max_age < Duration::from_secs(365 * 86_400) {
        p.add(
            format!("{key}.hsts_preload"),
            "needs hsts of at least a year (\"365d\"), as the preload lists ask",
        );
    }
    Some(Hsts {
        max_age,
        include_subdomains,
        preload,
    })
}

pub(super) fn server(p: &mut Problems, file: &File) -> Server {
    let s = &file.server;
    let (listen, tls, redirect_https) = listeners(p, s);
    let default_threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    Server {
        listen,
        tls,
        threads: s
            .threads
            .and_then(|t| p.int_in("server.threads", t, 1, MAX_THREADS))
            .map_or(default_threads, |t| t as usize),
        grace_period: p.duration(
            "server.grace_period",
            s.grace_period.as_deref(),
            Duration::from_secs(10),
        ),
        upstream_keepalive_pool: s
            .upstream_keepalive_pool
            .and_then(|n| p.int_in("server.upstream_keepalive_pool", n, 0, 1_000_000))
            .map_or(128, |n| n as usize),
        work_stealing: s.work_stealing.unwrap_or(true),
        upgrade_sock: upgrade_sock(p, s),
        trusted_proxies: s
            .trusted_proxies
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, c)| cidr(p, &format!("server.trusted_proxies[{i}]"), c))
            .collect(),
        path_policy: path_policy(p, s),
        header_timeout: p.positive(
            "server.header_timeout",
            &s.header_timeout,
            Duration::from_secs(10),
        ),
        keepalive_timeout: p.positive(
            "server.keepalive_timeout",
            &s.keepalive_timeout,
            Duration::from_secs(60),
        ),
        body_timeout: p.positive(
            "server.body_timeout",
            &s.body_timeout,
            Duration::from_secs(10),
        ),
        max_connections: s
            .max_connections
            .and_then(|n| p.int_in("server.max_connections", n, 0, MAX_CONNECTIONS))
            .map_or(0, |n| n as usize),
        h2c: s.h2c.unwrap_or(false),
        redirect_https,
        request_id: request_id(p, s),
    }
}

/// `listen`, `[[server.tls]]` and `redirect_https` (to the first TLS listener's port).
fn listeners(p: &mut Problems, s: &ServerFile) -> (Vec<SocketAddr>, Vec<TlsListener>, Option<u16>) {
    let listen_text = s
        .listen
        .clone()
        .unwrap_or_else(|| vec!["127.0.0.1:8080".to_owned()]);
    let listen: Vec<SocketAddr> = listen_text
        .iter()
        .enumerate()
        .filter_map(|(i, a)| p.socket_addr(&format!("server.listen[{i}]"), a))
        .collect();
    if listen_text.is_empty() && s.tls.is_empty() {
        p.add(
            "server.listen",
            "no public listener: give at least one address",
        );
    }
    let tls: Vec<TlsListener> = s
        .tls
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let key = format!("server.tls[{i}]");
            let cert = p.readable_file(&format!("{key}.cert"), &t.cert);
            let key_path = p.readable_file(&format!("{key}.key"), &t.key);
            let listen = p.socket_addr(&format!("{key}.listen"), &t.listen)?;
            let hsts = hsts(p, &key, t);
            Some(TlsListener {
                listen,
                cert,
                key: key_path,
                hsts,
            })
        })
        .collect();
    let redirect_https = match (s.redirect_https.unwrap_or(false), tls.first()) {
        (false, _) => None,
        (true, Some(first)) => Some(first.listen.port()),
        (true, None) => {
            p.add(
                "server.redirect_https",
                "needs a [[server.tls]] listener to redirect to",
            );
            None
        }
    };
    (listen, tls, redirect_https)
}

fn path_policy(p: &mut Problems, s: &ServerFile) -> PathPolicy {
    match s.path_policy.as_deref().unwrap_or("reject") {
        "reject" => PathPolicy::Reject,
        "decode" => PathPolicy::Decode,
        other => {
            p.add(
                "server.path_policy",
                format!("{other:?} is not a path policy: use \"reject\" (400 for ambiguous paths) or \"decode\""),
            );
            PathPolicy::Reject
        }
    }
}

fn upgrade_sock(p: &mut Problems, s: &ServerFile) -> PathBuf {
    match s.upgrade_sock.as_deref() {
        None => PathBuf::from(DEFAULT_UPGRADE_SOCK),
        Some(path) if path.trim().is_empty() || path.len() > MAX_UNIX_SOCKET_PATH => {
            p.add(
                "server.upgrade_sock",
                format!("must be a path of 1 to {MAX_UNIX_SOCKET_PATH} bytes"),
            );
            PathBuf::from(DEFAULT_UPGRADE_SOCK)
        }
        Some(path) => PathBuf::from(path),
    }
}

/// `request_id_header`: `""` sends none.
fn request_id(p: &mut Problems, s: &ServerFile) -> Option<http::HeaderName> {
    match s.request_id_header.as_deref() {
        None => Some(http::HeaderName::from_static("x-request-id")),
        Some("") => None,
        Some(name) => match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) if h.as_str().starts_with("x-anteroom-") || h == http::header::HOST => {
                p.add(
                    "server.request_id_header",
                    format!("{name:?} is a header anteroom sets itself"),
                );
                None
            }
            Ok(h) => Some(h),
            Err(_) => {
                p.add(
                    "server.request_id_header",
                    format!("{name:?} is not a header name (\"\" sends none)"),
                );
                None
            }
        },
    }
}

pub(super) fn admin(p: &mut Problems, file: &File) -> Admin {
    let a = &file.admin;
    let listen = p
        .socket_addr(
            "admin.listen",
            a.listen.as_deref().unwrap_or("127.0.0.1:9090"),
        )
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9090)));
    let token = p.secret("admin.token", &a.token, &a.token_file);
    if let Some(t) = token.as_ref().map(Secret::expose) {
        let key = if a.token.is_some() {
            "admin.token"
        } else {
            "admin.token_file"
        };
        if t.len() < MIN_TOKEN_LEN {
            p.add(
                key,
                format!(
                    "the token must be at least {MIN_TOKEN_LEN} characters long, got {}",
                    t.len()
                ),
            );
        } else if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            p.add(
                key,
                "the token must not contain whitespace or control characters",
            );
        }
    }
    Admin { listen, token }
}

pub(super) fn log(p: &mut Problems, file: &File) -> Log {
    let format = match file.log.format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            p.add(
                "log.format",
                format!("{other:?} is not a log format: use \"text\" or \"json\""),
            );
            LogFormat::Text
        }
    };
    let level = file.log.level.clone().unwrap_or_else(|| "info".to_owned());
    // Span and field filters compile regular expressions: a hostile or
    // mistyped one can take gigabytes (found by the config fuzzer).
    if level.len() > MAX_LOG_FILTER || level.contains(['[', '{']) {
        p.add(
            "log.level",
            format!(
                "must be levels and target=level directives (e.g. \"info,pingora=warn\"), at most {MAX_LOG_FILTER} bytes, without [span] or {{field}} filters"
            ),
        );
    } else if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
        p.add(
            "log.level",
            format!("{level:?} is not a log level or filter: {e}"),
        );
    }
    Log { format, level }
}

/// Two listeners overlap when they bind the same port on the same address, or
/// on the same port where one is the wildcard address.
pub(super) fn check_listeners_disjoint(p: &mut Problems, server: &Server, admin: &Admin) {
    let mut all: Vec<(String, SocketAddr)> = server
        .listen
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("server.listen[{i}]"), *a))
        .collect();
    all.extend(
        server
            .tls
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("server.tls[{i}].listen"), t.listen)),
    );
    all.push(("admin.listen".to_owned(), admin.listen));
    for (i, (key_a, a)) in all.iter().enumerate() {
        for (key_b, b) in &all[i + 1..] {
            let overlap = a.port() == b.port()
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified());
            if overlap {
                p.add(key_b.clone(), format!("{b} overlaps {key_a} ({a})"));
            }
        }
    }
}
