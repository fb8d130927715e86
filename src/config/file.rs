//! The TOML file exactly as operators write it.
//!
//! Numbers are read as `i64` and durations and addresses as strings so that a
//! wrong value becomes one entry in the list of problems `validate` reports,
//! instead of stopping the parse at the first one.

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub log: LogFile,
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamFile>,
    #[serde(default, rename = "room")]
    pub rooms: Vec<RoomFile>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteFile>,
}

/// `[server]`: the public side.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub listen: Option<Vec<String>>,
    #[serde(default)]
    pub tls: Vec<TlsListenFile>,
    pub threads: Option<i64>,
    pub grace_period: Option<String>,
    pub upstream_keepalive_pool: Option<i64>,
    pub work_stealing: Option<bool>,
}

/// `[[server.tls]]`: a public listener that terminates TLS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenFile {
    pub listen: String,
    pub cert: String,
    pub key: String,
}

/// `[admin]`: the operator's side.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub listen: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<String>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    pub format: Option<String>,
    pub level: Option<String>,
}

/// `[[upstream]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub name: String,
    pub address: String,
    #[serde(default)]
    pub tls: bool,
    pub sni: Option<String>,
    pub host_header: Option<String>,
    pub ca_file: Option<String>,
    pub verify_cert: Option<bool>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub write_timeout: Option<String>,
    pub idle_timeout: Option<String>,
}

/// `[[room]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomFile {
    pub name: String,
    pub mode: String,
    pub capacity: i64,
    pub max_wait: Option<String>,
}

/// `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: Option<String>,
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub upstream: String,
    pub room: Option<String>,
}
