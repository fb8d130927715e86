//! Configuration: the TOML file operators write (`file`), checked and turned
//! into the typed `Config` the proxy runs on (`validate`).
//!
//! The file is the product's user interface, so a bad one is answered with
//! every problem at once, each naming its key, and the process refuses to start.

mod file;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration that has passed validation: every reference resolves,
/// every number is in range, every duration parsed.
#[derive(Debug, Clone)]
pub struct Config {
    /// Public listeners and process settings.
    pub server: Server,
    /// The operator's listener.
    pub admin: Admin,
    /// Log output.
    pub log: Log,
    /// Where requests go, by name; routes refer to them by index.
    pub upstreams: Vec<Upstream>,
    /// Capacity-limited rooms; routes refer to them by index.
    pub rooms: Vec<Room>,
    /// Tried in order; the first match wins.
    pub routes: Vec<Route>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct Server {
    /// Plain-HTTP public listeners.
    pub listen: Vec<SocketAddr>,
    /// TLS-terminating public listeners.
    pub tls: Vec<TlsListener>,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// How long in-flight requests may run after SIGTERM/SIGINT.
    pub grace_period: Duration,
    /// Idle upstream connections kept for reuse, across all upstreams.
    pub upstream_keepalive_pool: usize,
    /// Let idle worker threads take work from busy ones.
    pub work_stealing: bool,
}

/// `[[server.tls]]`: certificate and key are PEM files.
#[derive(Debug, Clone)]
pub struct TlsListener {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Address of the admin listener, loopback by default.
    pub listen: SocketAddr,
    /// Bearer token required on every admin path but `/healthz`.
    pub token: Option<Secret>,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct Log {
    /// Human-readable lines or one JSON object per line.
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` overrides it.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For people reading a terminal.
    Text,
    /// For log shippers.
    Json,
}

/// `[[upstream]]`: one origin server.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Referenced by routes and shown in logs and metrics.
    pub name: String,
    /// Host name or IP literal, resolved at startup and refreshed in the background.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Speak TLS to the upstream.
    pub tls: bool,
    /// Name sent in the TLS handshake and checked against the certificate.
    pub sni: String,
    /// What the `Host` header sent upstream is.
    pub host_header: HostHeader,
    /// Trust these CA certificates (PEM) instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Check the upstream's certificate; off only for testing.
    pub verify_cert: bool,
    /// Limit on establishing a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Limit on each read from the upstream (time between bytes, not total).
    pub read_timeout: Duration,
    /// Limit on each write to the upstream.
    pub write_timeout: Duration,
    /// How long an idle upstream connection is kept for reuse.
    pub idle_timeout: Duration,
}

/// The `Host` header anteroom sends upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostHeader {
    /// Forward the client's `Host` unchanged.
    Keep,
    /// Replace it with this value.
    Set(String),
}

/// `[[room]]`: a capacity shared by the routes that name it.
#[derive(Debug, Clone)]
pub struct Room {
    /// Referenced by routes; appears in responses, logs and metrics.
    pub name: String,
    /// What the capacity counts.
    pub mode: RoomMode,
    /// Most requests (or visitors) inside at once.
    pub capacity: u32,
    /// How long a request may wait in line for a free slot before the 503.
    pub max_wait: Duration,
}

/// What a room's capacity counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomMode {
    /// Requests in flight to the upstream (the Gemini case).
    Requests,
    /// Visitors admitted at once.
    Sessions,
}

impl RoomMode {
    /// The name used in the config file and in responses.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomMode::Requests => "requests",
            RoomMode::Sessions => "sessions",
        }
    }
}

/// `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// Shown in logs and metrics; defaults to host + path prefix.
    pub name: String,
    /// Exact host (`api.example.com`) or suffix wildcard (`*.example.com`), lowercase.
    pub host: Option<String>,
    /// Matches paths that start with it.
    pub path_prefix: String,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    /// Index into `Config::rooms`.
    pub room: Option<usize>,
}

/// A value that must never reach a log line, not even through `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the expected shape.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file parsed but its values are wrong.
    #[error("{}: {} problem{}:\n{}", path.display(), problems.len(), if problems.len() == 1 { "" } else { "s" }, Problems(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

/// One wrong value: the key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, e.g. `room[0].capacity`.
    pub key: String,
    /// What, e.g. `must be at least 1, got 0`.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates TOML text; `origin` names it in messages.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let file: file::File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        validate::validate(file).map_err(|problems| ConfigError::Invalid {
            path: origin.to_owned(),
            problems,
        })
    }

    /// The room of a route, if it has one.
    pub fn room_of(&self, route: &Route) -> Option<&Room> {
        route.room.map(|i| &self.rooms[i])
    }
}
