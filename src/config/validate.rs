//! Turns the file as written into a `Config`, collecting every problem:
//! `Config::load` and `Config::from_toml`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{
    AttributionFile, EventsFile, File, JwtFile, LimitsFile, RoomFile, RouteFile, RulesFile,
    StoreFile, TlsListenFile, TokensFile, UpstreamFile, VerifyKeyFile,
};
use super::{
    AdaptiveLimit, Admin, Attribution, Backend, Bind, Config, ConfigError, Consent, Conversion,
    Deployment, FairBy, Fairness, HostHeader, Hsts, Jwt, JwtKey, JwtSource, Limits, Log, LogFormat,
    MAX_ADMIT_RATE, MAX_CAPACITY, OnStoreError, PathPolicy, Problem, ProofOfWork, RESERVED_PREFIX,
    Rate, RedisConfig, Room, RoomMode, Route, Rules, Secret, Server, Sessions, State, StateDir,
    StoreConfig, TlsListener, TokenBudget, Tokens, UnknownClients, Upstream,
};
use super::{Events, OnFull, Sink, SinkKind, is_name};
const MAX_THREADS: i64 = 1024;
/// Longest HSTS `max-age` accepted: two years, what preload lists ask for at most.
const MAX_HSTS: Duration = Duration::from_secs(730 * 24 * 3600);
/// Longest `[log] level` filter.
const MAX_LOG_FILTER: usize = 512;
/// Where `--upgrade` receives the listening sockets unless `upgrade_sock` says.
const DEFAULT_UPGRADE_SOCK: &str = "/tmp/anteroom_upgrade.sock";
/// `sun_path` holds 108 bytes with the terminating NUL.
const MAX_UNIX_SOCKET_PATH: usize = 107;
const MAX_WAIT_LIMIT: Duration = Duration::from_secs(300);
const MIN_TOKEN_LEN: usize = 16;
/// How long a ticket lives unless `[tokens] ticket_ttl` says otherwise.
const DEFAULT_TICKET_TTL: Duration = Duration::from_secs(1800);
/// Proof of work: 16 bits take a browser well under a second, 28 bits
/// minutes; below 8 it stops nobody.
const DEFAULT_POW_BITS: u8 = 16;
const MIN_POW_BITS: i64 = 8;
const MAX_POW_BITS: i64 = 28;
const MAX_ATTRIBUTION_VALUES: usize = 100;
/// Longest duration any key takes: beyond it a value is surely a mistake,
/// and arithmetic on it could overflow.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);
/// Largest file a key may name (keys, templates, CA bundles, secrets).
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Largest configuration file.
const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// Most open client connections a cap may allow.
const MAX_CONNECTIONS: i64 = 10_000_000;

/// Collects problems while the rest of the file is still checked.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, key: &str, value: Option<&str>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(text) => match humantime::parse_duration(text) {
                Ok(d) if d > MAX_DURATION => {
                    self.add(
                        key,
                        format!(
                            "{text:?} is longer than {}d, the longest any duration may be",
                            MAX_DURATION.as_secs() / 86_400
                        ),
                    );
                    default
                }
                Ok(d) => d,
                Err(e) => {
                    self.add(
                        key,
                        format!("cannot parse {text:?} as a duration ({e}); write e.g. \"250ms\", \"10s\", \"5m\""),
                    );
                    default
                }
            },
        }
    }

    fn socket_addr(&mut self, key: &str, text: &str) -> Option<SocketAddr> {
        match text.parse::<SocketAddr>() {
            Ok(addr) if addr.port() == 0 => {
                self.add(key, format!("{text:?} has port 0; give a fixed port"));
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                self.add(
                    key,
                    format!("{text:?} is not an IP:port address (e.g. \"127.0.0.1:8080\" or \"[::]:8080\")"),
                );
                None
            }
        }
    }

    fn int_in(&mut self, key: &str, value: i64, min: i64, max: i64) -> Option<i64> {
        if value < min {
            self.add(key, format!("must be at least {min}, got {value}"));
            None
        } else if value > max {
            self.add(key, format!("must be at most {max}, got {value}"));
            None
        } else {
            Some(value)
        }
    }

    fn name(&mut self, key: &str, name: &str) {
        if !is_name(name) {
            self.add(
                key,
                format!(
                    "{name:?} is not a valid name: use 1 to 64 letters, digits, '-', '_' or '.'"
                ),
            );
        }
    }

    /// A file the config names, which must be a regular file of at most
    /// `MAX_FILE_BYTES` (a device such as `/dev/zero` would never end).
    fn readable_file(&mut self, key: &str, path: &str) -> PathBuf {
        if let Err(message) = regular_file(Path::new(path), MAX_FILE_BYTES) {
            self.add(key, message);
        }
        PathBuf::from(path)
    }

    /// A secret kept in a file of its own (`token_file`, `password_file`,
    /// `secret_file`), without the line end an editor adds.
    fn secret_file(&mut self, key: &str, path: &str) -> Option<String> {
        let read = regular_file(Path::new(path), MAX_FILE_BYTES).and_then(|()| {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {path:?}: {e}"))
        });
        match read {
            Ok(text) => Some(text.trim().to_owned()),
            Err(message) => {
                self.add(key, message);
                None
            }
        }
    }

    /// A value given inline or in a file, not both.
    fn inline_or_file<'a>(
        &mut self,
        key: &'a str,
        inline: Option<&String>,
        file: Option<&String>,
        file_key: &'a str,
    ) -> Option<String> {
        match (inline, file) {
            (Some(_), Some(_)) => {
                let last = |k: &'a str| k.rsplit('.').next().unwrap_or(k);
                self.add(
                    key,
                    format!("give either {} or {}, not both", last(key), last(file_key)),
                );
                None
            }
            (Some(value), None) => Some(value.clone()),
            (None, Some(path)) => self.secret_file(file_key, path),
            (None, None) => None,
        }
    }
}

/// Whether `path` is a regular file of at most `max` bytes; the message says why not.
fn regular_file(path: &Path, max: u64) -> Result<(), String> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Err(e) => Err(format!("cannot read \"{shown}\": {e}")),
        Ok(m) if !m.is_file() => Err(format!("\"{shown}\" is not a regular file")),
        Ok(m) if m.len() > max => Err(format!(
            "\"{shown}\" is {} bytes; at most {max} are read",
            m.len()
        )),
        Ok(_) => Ok(()),
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        regular_file(path, MAX_CONFIG_BYTES)
            .map_err(|message| read(std::io::Error::other(message)))?;
        let text = std::fs::read_to_string(path).map_err(read)?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates TOML text; `origin` names it in messages.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let parse_error = |e: toml::de::Error| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        };
        let mut unknown = Vec::new();
        let document = toml::Deserializer::parse(text).map_err(parse_error)?;
        let file: File = serde_ignored::deserialize(document, |path| {
            unknown.push(Problem {
                key: key_of(&path),
                message: "unknown key (a typo? docs/configuration.md lists every key)".into(),
            });
        })
        .map_err(parse_error)?;
        let checked = validate(file, origin);
        if unknown.is_empty() {
            return checked.map_err(|problems| ConfigError::Invalid {
                path: origin.to_owned(),
                problems,
            });
        }
        // An unknown key is never dropped silently: the file is refused
        // with it and every other problem.
        unknown.extend(checked.err().unwrap_or_default());
        Err(ConfigError::Invalid {
            path: origin.to_owned(),
            problems: unknown,
        })
    }
}

/// A key's path as problems name it: tables of arrays counted from 0
/// (`room[0].limits.capcity`).
fn key_of(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_of(parent)),
        Path::Map { parent, key } => {
            let parent = key_of(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_of(parent),
    }
}

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

fn validate(file: File, origin: &Path) -> Result<Config, Vec<Problem>> {
    let mut p = Problems::default();

    let server = server(&mut p, &file);
    let admin = admin(&mut p, &file);
    let log = log(&mut p, &file);
    check_listeners_disjoint(&mut p, &server, &admin);

    let upstreams: Vec<Upstream> = file
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| upstream(&mut p, i, u))
        .collect();
    let upstream_index = index_by_name(&mut p, "upstream", upstreams.iter().map(|u| &u.name));

    let jwts: Vec<Jwt> = file
        .jwts
        .iter()
        .enumerate()
        .filter_map(|(i, j)| jwt(&mut p, i, j))
        .collect();
    let jwt_index = index_by_name(&mut p, "jwt", file.jwts.iter().map(|j| &j.name));

    let rooms: Vec<Room> = file
        .rooms
        .iter()
        .enumerate()
        .filter_map(|(i, r)| room(&mut p, i, r, &jwt_index))
        .collect();
    let room_index = index_by_name(&mut p, "room", file.rooms.iter().map(|r| &r.name));
    check_cookie_paths(&mut p, &rooms);

    let tokens = file.tokens.as_ref().map(|t| tokens(&mut p, t));
    let mut rooms = rooms;
    for s in rooms.iter_mut().filter_map(|r| r.sessions.as_mut()) {
        s.ticket_ttl = tokens.as_ref().map_or(s.ticket_ttl, |t| t.ticket_ttl);
    }
    if tokens.is_none() && rooms.iter().any(|r| r.sessions.is_some()) {
        p.add(
            "tokens.signing_key",
            "sessions rooms sign passes and tickets: add [tokens] signing_key (create one with `anteroom keygen --out certs/`)",
        );
    }
    let attribution = attribution(&mut p, &file.attribution);
    let store = store(&mut p, &file.store);
    let events = events(
        &mut p,
        &file.events,
        store.state.as_ref().map(|s| s.dir.clone()),
    );

    if file.routes.is_empty() {
        p.add(
            "route",
            "at least one [[route]] is needed, or nothing is proxied",
        );
    }
    let routes: Vec<Route> = file
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| route(&mut p, i, r, &upstream_index, &room_index, &jwt_index))
        .collect();
    check_shadowed_routes(&mut p, &routes);
    for (i, route) in routes.iter().enumerate() {
        let room = route.room.and_then(|r| rooms.get(r));
        if route.retry_429 && room.is_some_and(|r| r.mode != RoomMode::Requests) {
            p.add(
                format!("route[{i}].retry_429"),
                "only applies to a route with a requests room (its max_wait bounds the retries)",
            );
        }
    }

    if p.0.is_empty() {
        Ok(Config {
            origin: origin.to_owned(),
            server,
            admin,
            log,
            upstreams,
            rooms,
            routes,
            tokens,
            jwts,
            attribution,
            events,
            store,
        })
    } else {
        Err(p.0)
    }
}

fn server(p: &mut Problems, file: &File) -> Server {
    let s = &file.server;
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
    let default_threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = s
        .threads
        .and_then(|t| p.int_in("server.threads", t, 1, MAX_THREADS))
        .map_or(default_threads, |t| t as usize);
    let upstream_keepalive_pool = s
        .upstream_keepalive_pool
        .and_then(|n| p.int_in("server.upstream_keepalive_pool", n, 0, 1_000_000))
        .map_or(128, |n| n as usize);
    let path_policy = match s.path_policy.as_deref().unwrap_or("reject") {
        "reject" => PathPolicy::Reject,
        "decode" => PathPolicy::Decode,
        other => {
            p.add(
                "server.path_policy",
                format!("{other:?} is not a path policy: use \"reject\" (400 for ambiguous paths) or \"decode\""),
            );
            PathPolicy::Reject
        }
    };
    let positive = |p: &mut Problems, key: &str, v: &Option<String>, default: u64| {
        let d = p.duration(key, v.as_deref(), Duration::from_secs(default));
        if d.is_zero() {
            p.add(key, "must be longer than 0");
        }
        d
    };
    let header_timeout = positive(p, "server.header_timeout", &s.header_timeout, 10);
    let keepalive_timeout = positive(p, "server.keepalive_timeout", &s.keepalive_timeout, 60);
    let body_timeout = positive(p, "server.body_timeout", &s.body_timeout, 10);
    let max_connections = s
        .max_connections
        .and_then(|n| p.int_in("server.max_connections", n, 0, MAX_CONNECTIONS))
        .map_or(0, |n| n as usize);
    Server {
        listen,
        tls,
        threads,
        grace_period: p.duration(
            "server.grace_period",
            s.grace_period.as_deref(),
            Duration::from_secs(10),
        ),
        upstream_keepalive_pool,
        work_stealing: s.work_stealing.unwrap_or(true),
        upgrade_sock: match s.upgrade_sock.as_deref() {
            None => PathBuf::from(DEFAULT_UPGRADE_SOCK),
            Some(path) if path.trim().is_empty() || path.len() > MAX_UNIX_SOCKET_PATH => {
                p.add(
                    "server.upgrade_sock",
                    format!("must be a path of 1 to {MAX_UNIX_SOCKET_PATH} bytes"),
                );
                PathBuf::from(DEFAULT_UPGRADE_SOCK)
            }
            Some(path) => PathBuf::from(path),
        },
        trusted_proxies: s
            .trusted_proxies
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, c)| cidr(p, &format!("server.trusted_proxies[{i}]"), c))
            .collect(),
        path_policy,
        header_timeout,
        keepalive_timeout,
        body_timeout,
        max_connections,
        h2c: s.h2c.unwrap_or(false),
        redirect_https,
        request_id: match s.request_id_header.as_deref() {
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
        },
    }
}

fn cidr(p: &mut Problems, key: &str, text: &str) -> Option<ipnet::IpNet> {
    let parsed = text
        .parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
    match parsed {
        Ok(net) => Some(net.trunc()),
        Err(_) => {
            p.add(
                key,
                format!("{text:?} is not an IP network (e.g. \"10.0.0.0/8\" or \"2001:db8::/32\")"),
            );
            None
        }
    }
}

fn admin(p: &mut Problems, file: &File) -> Admin {
    let a = &file.admin;
    let listen = p
        .socket_addr(
            "admin.listen",
            a.listen.as_deref().unwrap_or("127.0.0.1:9090"),
        )
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9090)));
    let token = p.inline_or_file(
        "admin.token",
        a.token.as_ref(),
        a.token_file.as_ref(),
        "admin.token_file",
    );
    if let Some(t) = &token {
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
    Admin {
        listen,
        token: token.map(Secret),
    }
}

fn log(p: &mut Problems, file: &File) -> Log {
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
fn check_listeners_disjoint(p: &mut Problems, server: &Server, admin: &Admin) {
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

fn upstream(p: &mut Problems, i: usize, u: &UpstreamFile) -> Upstream {
    let key = format!("upstream[{i}]");
    p.name(&format!("{key}.name"), &u.name);
    let (host, port) = match split_host_port(&u.address) {
        Some(hp) => hp,
        None => {
            p.add(
                format!("{key}.address"),
                format!(
                    "{:?} is not host:port (e.g. \"127.0.0.1:3000\" or \"api.example.com:443\")",
                    u.address
                ),
            );
            (String::new(), 0)
        }
    };
    if u.sni.is_some() && !u.tls {
        p.add(format!("{key}.sni"), "sni is only used with tls = true");
    }
    if u.ca_file.is_some() && !u.tls {
        p.add(
            format!("{key}.ca_file"),
            "ca_file is only used with tls = true",
        );
    }
    let ca_file = u
        .ca_file
        .as_deref()
        .map(|f| p.readable_file(&format!("{key}.ca_file"), f));
    let sni = u.sni.clone().unwrap_or_else(|| host.clone());
    if u.tls && sni.parse::<std::net::IpAddr>().is_ok() && u.verify_cert.unwrap_or(true) {
        p.add(
            format!("{key}.sni"),
            "a TLS upstream given by IP address needs sni = \"<name on its certificate>\"",
        );
    }
    let host_header = match &u.host_header {
        Some(h) if h.is_empty() || h.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            p.add(
                format!("{key}.host_header"),
                format!("{h:?} is not a valid Host header value"),
            );
            HostHeader::Keep
        }
        Some(h) => HostHeader::Set(h.clone()),
        // A TLS origin serves the name on its certificate, so that is the Host it expects.
        None if u.tls => HostHeader::Set(sni.clone()),
        None => HostHeader::Keep,
    };
    let d = |p: &mut Problems, field: &str, v: &Option<String>, default: u64| {
        p.duration(
            &format!("{key}.{field}"),
            v.as_deref(),
            Duration::from_secs(default),
        )
    };
    let connect_timeout = d(p, "connect_timeout", &u.connect_timeout, 5);
    let read_timeout = d(p, "read_timeout", &u.read_timeout, 60);
    let write_timeout = d(p, "write_timeout", &u.write_timeout, 60);
    let idle_timeout = d(p, "idle_timeout", &u.idle_timeout, 60);
    for (field, value) in [
        ("connect_timeout", connect_timeout),
        ("read_timeout", read_timeout),
        ("write_timeout", write_timeout),
    ] {
        if value.is_zero() {
            p.add(format!("{key}.{field}"), "must be longer than 0");
        }
    }
    Upstream {
        name: u.name.clone(),
        host,
        port,
        tls: u.tls,
        sni,
        host_header,
        ca_file,
        verify_cert: u.verify_cert.unwrap_or(true),
        connect_timeout,
        read_timeout,
        write_timeout,
        idle_timeout,
        h2: u.h2.unwrap_or(false),
    }
}

/// Splits `host:port` and `[v6]:port`; the port is required and not 0.
fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        (host, port)
    } else {
        address.rsplit_once(':')?
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'));
    host_ok.then(|| (host.to_owned(), port))
}

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
fn check_cookie_paths(p: &mut Problems, rooms: &[Room]) {
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

fn rules(
    p: &mut Problems,
    key: &str,
    r: Option<&RulesFile>,
    jwts: &HashMap<String, usize>,
) -> Rules {
    let Some(r) = r else {
        return Rules::default();
    };
    for (i, path) in r.paths.iter().enumerate() {
        if !path.starts_with('/') {
            p.add(
                format!("{key}.paths[{i}]"),
                format!("{path:?} must start with '/'"),
            );
        }
    }
    let jwt = r.jwt.as_ref().and_then(|name| {
        let found = jwts.get(name).copied();
        if found.is_none() {
            p.add(
                format!("{key}.jwt"),
                format!("unknown [[jwt]] {name:?} (known: {})", known(jwts)),
            );
        }
        found
    });
    Rules {
        paths: r.paths.clone(),
        cidrs: r
            .cidrs
            .iter()
            .enumerate()
            .filter_map(|(i, c)| cidr(p, &format!("{key}.cidrs[{i}]"), c))
            .collect(),
        jwt,
    }
}

fn tokens(p: &mut Problems, t: &TokensFile) -> Tokens {
    let issuer = t.issuer.clone().unwrap_or_else(|| "anteroom".to_owned());
    if issuer.is_empty() {
        p.add("tokens.issuer", "must not be empty");
    }
    let signing_key = p.readable_file("tokens.signing_key", &t.signing_key);
    let verify_keys = t
        .verify_keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let key = format!("tokens.verify_keys[{i}]");
            let (file, kid) = match k {
                VerifyKeyFile::Path(f) => (f.as_str(), None),
                VerifyKeyFile::WithKid(t) => (t.file.as_str(), Some(t.kid.clone())),
            };
            (p.readable_file(&key, file), kid)
        })
        .collect();
    if let Some(kid) = &t.signing_kid {
        if kid.is_empty() || kid.len() > 128 || !kid.bytes().all(|b| b.is_ascii_graphic()) {
            p.add(
                "tokens.signing_kid",
                "must be 1 to 128 visible ASCII characters",
            );
        }
    }
    let ticket_ttl = p.duration(
        "tokens.ticket_ttl",
        t.ticket_ttl.as_deref(),
        DEFAULT_TICKET_TTL,
    );
    if ticket_ttl < Duration::from_secs(60) {
        p.add("tokens.ticket_ttl", "must be at least 1m");
    }
    let cache_size = t
        .cache_size
        .and_then(|n| p.int_in("tokens.cache_size", n, 16, 100_000_000))
        .unwrap_or(200_000) as usize;
    Tokens {
        issuer,
        signing_key,
        signing_kid: t.signing_kid.clone(),
        verify_keys,
        ticket_ttl,
        cache_size,
    }
}

fn jwt(p: &mut Problems, i: usize, j: &JwtFile) -> Option<Jwt> {
    use jsonwebtoken::Algorithm::*;
    let key = format!("jwt[{i}]");
    p.name(&format!("{key}.name"), &j.name);
    let source = match (&j.cookie, &j.header) {
        (Some(c), None) if !c.is_empty() => Some(JwtSource::Cookie(c.clone())),
        (None, Some(h)) => match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => Some(JwtSource::Header(name)),
            Err(_) => {
                p.add(
                    format!("{key}.header"),
                    format!("{h:?} is not a header name"),
                );
                None
            }
        },
        _ => {
            p.add(
                format!("{key}.cookie"),
                "give exactly one of cookie or header",
            );
            None
        }
    };
    let algorithm = j.algorithm.parse::<jsonwebtoken::Algorithm>().ok();
    if algorithm.is_none() {
        p.add(
            format!("{key}.algorithm"),
            format!("{:?} is not a JWT algorithm: use HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA", j.algorithm),
        );
    }
    let secret = p.inline_or_file(
        &format!("{key}.secret"),
        j.secret.as_ref(),
        j.secret_file.as_ref(),
        &format!("{key}.secret_file"),
    );
    let jwt_key = match (algorithm?, secret, &j.public_key) {
        (HS256 | HS384 | HS512, Some(secret), None) => {
            if secret.len() < 32 {
                p.add(
                    format!("{key}.secret"),
                    "an HMAC secret must be at least 32 characters",
                );
            }
            Some(JwtKey::Secret(Secret(secret)))
        }
        (HS256 | HS384 | HS512, _, _) => {
            p.add(
                format!("{key}.secret"),
                "an HS* algorithm needs secret (or secret_file) and no public_key",
            );
            None
        }
        (_, None, Some(path)) => Some(JwtKey::PublicKey(
            p.readable_file(&format!("{key}.public_key"), path),
        )),
        (_, _, _) => {
            p.add(
                format!("{key}.public_key"),
                "a public-key algorithm needs public_key (PEM) and no secret",
            );
            None
        }
    };
    Some(Jwt {
        name: j.name.clone(),
        source: source?,
        algorithm: algorithm?,
        key: jwt_key?,
        issuer: j.issuer.clone(),
        audience: j.audience.clone(),
    })
}

fn store(p: &mut Problems, s: &StoreFile) -> StoreConfig {
    let positive = |p: &mut Problems, key: &str, v: &Option<String>, default: Duration| {
        let d = p.duration(key, v.as_deref(), default);
        if d.is_zero() {
            p.add(key, "must be longer than 0");
        }
        d
    };
    let redis_keys = [
        ("url", s.url.is_some()),
        ("sentinels", s.sentinels.is_some()),
        ("sentinel_master", s.sentinel_master.is_some()),
        ("sentinel_username", s.sentinel_username.is_some()),
        ("sentinel_password", s.sentinel_password.is_some()),
        ("sentinel_password_file", s.sentinel_password_file.is_some()),
        ("cluster_nodes", s.cluster_nodes.is_some()),
        ("username", s.username.is_some()),
        ("password", s.password.is_some()),
        ("password_file", s.password_file.is_some()),
        ("key_prefix", s.key_prefix.is_some()),
        ("connections", s.connections.is_some()),
        ("timeout", s.timeout.is_some()),
        ("connect_timeout", s.connect_timeout.is_some()),
        ("lease", s.lease.is_some()),
        ("ca_file", s.ca_file.is_some()),
    ];
    let backend = match s.backend.as_deref().unwrap_or("memory") {
        "memory" => {
            for (field, given) in redis_keys {
                if given {
                    p.add(
                        format!("store.{field}"),
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
    let interval = positive(
        p,
        "store.snapshot_interval",
        &s.snapshot_interval,
        Duration::from_secs(1),
    );
    let state = match (&s.state_dir, &backend) {
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
    };
    let touch_interval = positive(p, "store.touch_interval", &s.touch_interval, touch_default);
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
        sweep_interval: positive(
            p,
            "store.sweep_interval",
            &s.sweep_interval,
            Duration::from_secs(1),
        ),
        touch_interval,
        rebuild_grace,
        state,
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
        let password = p
            .inline_or_file(
                "store.sentinel_password",
                s.sentinel_password.as_ref(),
                s.sentinel_password_file.as_ref(),
                "store.sentinel_password_file",
            )
            .map(Secret);
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
    let password = p
        .inline_or_file(
            "store.password",
            s.password.as_ref(),
            s.password_file.as_ref(),
            "store.password_file",
        )
        .map(Secret);
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
    let d = |p: &mut Problems, key: &str, v: &Option<String>, default: Duration| {
        let d = p.duration(key, v.as_deref(), default);
        if d.is_zero() {
            p.add(key, "must be longer than 0");
        }
        d
    };
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
        timeout: d(p, "store.timeout", &s.timeout, Duration::from_millis(250)),
        connect_timeout: d(
            p,
            "store.connect_timeout",
            &s.connect_timeout,
            Duration::from_secs(1),
        ),
        lease: d(p, "store.lease", &s.lease, Duration::from_secs(10)),
        ca_file: s.ca_file.as_deref().map(|f| {
            if !tls {
                p.add("store.ca_file", "ca_file is only used with rediss:// URLs");
            }
            p.readable_file("store.ca_file", f)
        }),
    }
}

fn attribution(p: &mut Problems, a: &AttributionFile) -> Attribution {
    for (field, values) in [("sources", &a.sources), ("campaigns", &a.campaigns)] {
        if values.len() > MAX_ATTRIBUTION_VALUES {
            p.add(
                format!("attribution.{field}"),
                format!(
                    "at most {MAX_ATTRIBUTION_VALUES} values (each is a metric label), got {}",
                    values.len()
                ),
            );
        }
        if values.iter().any(|v| v.is_empty() || v == "other") {
            p.add(
                format!("attribution.{field}"),
                "values must not be empty or \"other\"",
            );
        }
    }
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let consent = match (&a.consent_cookie, &a.consent_values) {
        (None, None) => None,
        (None, Some(_)) => {
            p.add(
                "attribution.consent_values",
                "only applies with consent_cookie",
            );
            None
        }
        (Some(cookie), values) => {
            if !token(cookie) {
                p.add(
                    "attribution.consent_cookie",
                    format!("{cookie:?} is not a cookie name"),
                );
            }
            let values = values.clone().unwrap_or_default();
            if values.iter().any(|v| v.is_empty() || v.len() > 200) {
                p.add(
                    "attribution.consent_values",
                    "values must be 1 to 200 characters",
                );
            }
            Some(Consent {
                cookie: cookie.clone(),
                values,
            })
        }
    };
    Attribution {
        sources: a.sources.clone(),
        campaigns: a.campaigns.clone(),
        consent,
    }
}

fn route(
    p: &mut Problems,
    i: usize,
    r: &RouteFile,
    upstreams: &HashMap<String, usize>,
    rooms: &HashMap<String, usize>,
    jwts: &HashMap<String, usize>,
) -> Option<Route> {
    let key = format!("route[{i}]");
    let path_prefix = r.path_prefix.clone().unwrap_or_else(|| "/".to_owned());
    if !path_prefix.starts_with('/') {
        p.add(
            format!("{key}.path_prefix"),
            format!("{path_prefix:?} must start with '/'"),
        );
    }
    if path_prefix.starts_with(RESERVED_PREFIX) {
        p.add(
            format!("{key}.path_prefix"),
            format!("{path_prefix:?} is under {RESERVED_PREFIX}, which anteroom answers itself and never proxies"),
        );
    }
    let host = r.host.as_ref().map(|h| h.to_ascii_lowercase());
    if let Some(h) = &host {
        let bare = h.strip_prefix("*.").unwrap_or(h);
        let ok = !bare.is_empty()
            && bare
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
        if !ok {
            p.add(
                format!("{key}.host"),
                format!("{h:?} is not a host name: give e.g. \"api.example.com\" or \"*.example.com\", without scheme or port"),
            );
        }
    }
    let upstream = upstreams.get(&r.upstream).copied();
    if upstream.is_none() {
        p.add(
            format!("{key}.upstream"),
            format!(
                "unknown upstream {:?} (known: {})",
                r.upstream,
                known(upstreams)
            ),
        );
    }
    let room = match &r.room {
        None => Some(None),
        Some(name) => match rooms.get(name) {
            Some(&idx) => Some(Some(idx)),
            None => {
                p.add(
                    format!("{key}.room"),
                    format!("unknown room {name:?} (known: {})", known(rooms)),
                );
                None
            }
        },
    };
    let name = r
        .name
        .clone()
        .unwrap_or_else(|| format!("{}{}", host.as_deref().unwrap_or(""), path_prefix));
    if ["anteroom", "unrouted"].contains(&name.as_str()) {
        p.add(
            format!("{key}.name"),
            format!("{name:?} is the route label of requests no route takes; choose another"),
        );
    }
    let bypass = rules(p, &format!("{key}.bypass"), r.bypass.as_ref(), jwts);
    if !bypass.is_empty() && r.room.is_none() {
        p.add(
            format!("{key}.bypass"),
            "a route without a room lets everyone through already",
        );
    }
    if r.retry_429.is_some() && r.room.is_none() {
        p.add(
            format!("{key}.retry_429"),
            "only applies to a route with a requests room (its max_wait bounds the retries)",
        );
    }
    Some(Route {
        name,
        host,
        path_prefix,
        upstream: upstream?,
        room: room?,
        retry_429: r.retry_429.unwrap_or(false),
        case_insensitive: r.case_insensitive.unwrap_or(false),
        bypass,
    })
}

fn known(names: &HashMap<String, usize>) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    let mut v: Vec<_> = names.iter().collect();
    v.sort_by_key(|(_, i)| **i);
    v.iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn index_by_name<'a>(
    p: &mut Problems,
    kind: &str,
    names: impl Iterator<Item = &'a String>,
) -> HashMap<String, usize> {
    let mut index = HashMap::new();
    for (i, name) in names.enumerate() {
        if let Some(first) = index.insert(name.clone(), i) {
            p.add(
                format!("{kind}[{i}].name"),
                format!("duplicate name {name:?}, already used by {kind}[{first}]"),
            );
            index.insert(name.clone(), first);
        }
    }
    index
}

/// A route that can never match because an earlier one catches all its requests
/// is almost certainly a mistake in the order of the file.
fn check_shadowed_routes(p: &mut Problems, routes: &[Route]) {
    for (j, later) in routes.iter().enumerate() {
        if let Some((i, _)) = routes[..j].iter().enumerate().find(|(_, earlier)| {
            (earlier.host.is_none() || earlier.host == later.host)
                && later.path_prefix.starts_with(&earlier.path_prefix)
        }) {
            p.add(
                format!("route[{j}]"),
                format!(
                    "never matches: route[{i}] comes first and catches every request it would ({:?}); put the more specific route first",
                    routes[i].name
                ),
            );
        }
    }
}

/// Most events a sink may hold undelivered.
const MAX_EVENT_BUFFER: i64 = 10_000_000;

fn events(p: &mut Problems, e: &EventsFile, state_dir: Option<PathBuf>) -> Events {
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

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("a.b:80"), Some(("a.b".into(), 80)));
        assert_eq!(split_host_port("[::1]:443"), Some(("::1".into(), 443)));
        assert_eq!(split_host_port("a.b"), None);
        assert_eq!(split_host_port("a.b:0"), None);
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(split_host_port("http://a:80"), None);
    }
}
