//! Turns the file as written into a `Config`, collecting every problem.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::file::{File, RoomFile, RouteFile, UpstreamFile};
use super::{
    Admin, Config, HostHeader, Log, LogFormat, Problem, Room, RoomMode, Route, Secret, Server,
    TlsListener, Upstream,
};

const RESERVED_PREFIX: &str = "/__anteroom/";
const MAX_CAPACITY: i64 = 10_000_000;
const MAX_THREADS: i64 = 1024;
const MAX_WAIT_LIMIT: Duration = Duration::from_secs(300);
const MIN_TOKEN_LEN: usize = 16;

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
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            self.add(
                key,
                format!(
                    "{name:?} is not a valid name: use 1 to 64 letters, digits, '-', '_' or '.'"
                ),
            );
        }
    }

    fn readable_file(&mut self, key: &str, path: &str) -> PathBuf {
        if let Err(e) = std::fs::metadata(path) {
            self.add(key, format!("cannot read {path:?}: {e}"));
        }
        PathBuf::from(path)
    }
}

pub(super) fn validate(file: File) -> Result<Config, Vec<Problem>> {
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

    let rooms: Vec<Room> = file
        .rooms
        .iter()
        .enumerate()
        .filter_map(|(i, r)| room(&mut p, i, r))
        .collect();
    let room_index = index_by_name(&mut p, "room", file.rooms.iter().map(|r| &r.name));

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
        .filter_map(|(i, r)| route(&mut p, i, r, &upstream_index, &room_index))
        .collect();
    check_shadowed_routes(&mut p, &routes);

    if p.0.is_empty() {
        Ok(Config {
            server,
            admin,
            log,
            upstreams,
            rooms,
            routes,
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
    let tls = s
        .tls
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let key = format!("server.tls[{i}]");
            let cert = p.readable_file(&format!("{key}.cert"), &t.cert);
            let key_path = p.readable_file(&format!("{key}.key"), &t.key);
            let listen = p.socket_addr(&format!("{key}.listen"), &t.listen)?;
            Some(TlsListener {
                listen,
                cert,
                key: key_path,
            })
        })
        .collect();
    let default_threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = s
        .threads
        .and_then(|t| p.int_in("server.threads", t, 1, MAX_THREADS))
        .map_or(default_threads, |t| t as usize);
    let upstream_keepalive_pool = s
        .upstream_keepalive_pool
        .and_then(|n| p.int_in("server.upstream_keepalive_pool", n, 0, 1_000_000))
        .map_or(128, |n| n as usize);
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
    let token = match (&a.token, &a.token_file) {
        (Some(_), Some(_)) => {
            p.add("admin.token", "give either token or token_file, not both");
            None
        }
        (Some(t), None) => Some(t.clone()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(t) => Some(t.trim().to_owned()),
            Err(e) => {
                p.add("admin.token_file", format!("cannot read {path:?}: {e}"));
                None
            }
        },
        (None, None) => None,
    };
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
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
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

fn room(p: &mut Problems, i: usize, r: &RoomFile) -> Option<Room> {
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
    let capacity = p.int_in(&format!("{key}.capacity"), r.capacity, 1, MAX_CAPACITY);
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
    if mode == Some(RoomMode::Sessions) && r.max_wait.is_some() {
        p.add(
            format!("{key}.max_wait"),
            "max_wait applies to rooms in \"requests\" mode; a sessions room queues visitors instead",
        );
    }
    Some(Room {
        name: r.name.clone(),
        mode: mode?,
        capacity: capacity? as u32,
        max_wait,
    })
}

fn route(
    p: &mut Problems,
    i: usize,
    r: &RouteFile,
    upstreams: &HashMap<String, usize>,
    rooms: &HashMap<String, usize>,
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
    Some(Route {
        name,
        host,
        path_prefix,
        upstream: upstream?,
        room: room?,
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
