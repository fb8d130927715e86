//! The TOML file exactly as operators write it.
//!
//! Numbers are read as `i64` and durations and addresses as strings so that a
//! wrong value becomes one entry in the list of problems `validate` reports,
//! instead of stopping the parse at the first one. For the same reason an
//! unknown key does not stop the parse (`deny_unknown_fields` would): the
//! parse collects every key these structs leave unread (`serde_ignored`, as
//! Cargo does for its manifests), and each is a problem beside the others.
//! A room's table also serialises back, to the keys it was given, so that a
//! key of the other kind of room is refused by a list, not by hand.

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
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
    pub tokens: Option<TokensFile>,
    #[serde(default, rename = "jwt")]
    pub jwts: Vec<JwtFile>,
    #[serde(default)]
    pub attribution: AttributionFile,
    #[serde(default)]
    pub store: StoreFile,
    #[serde(default)]
    pub events: EventsFile,
}

/// `[events]`: where visitor and room events are delivered.
#[derive(Debug, Default, Deserialize)]
pub struct EventsFile {
    pub buffer: Option<i64>,
    pub on_full: Option<String>,
    pub dead_letter_dir: Option<String>,
    pub batch: Option<i64>,
    pub flush_interval: Option<String>,
    pub max_attempts: Option<i64>,
    pub retry_base: Option<String>,
    pub retry_max: Option<String>,
    pub timeout: Option<String>,
    pub ready_requires_sinks: Option<bool>,
    pub instance: Option<String>,
    #[serde(default)]
    pub sink: Vec<SinkFile>,
}

/// `[[events.sink]]`.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct SinkFile {
    pub kind: String,
    pub name: Option<String>,
    pub url: Option<String>,
    pub subject: Option<String>,
    pub stream: Option<String>,
    pub maxlen: Option<i64>,
    pub create_stream: Option<bool>,
    pub secret_file: Option<String>,
    pub path: Option<String>,
    pub max_bytes: Option<i64>,
}

/// `[store]`.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct StoreFile {
    pub backend: Option<String>,
    pub sweep_interval: Option<String>,
    pub touch_interval: Option<String>,
    pub rebuild_grace: Option<String>,
    pub url: Option<String>,
    pub sentinels: Option<Vec<String>>,
    pub sentinel_master: Option<String>,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    pub sentinel_password_file: Option<String>,
    pub cluster_nodes: Option<Vec<String>>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    pub key_prefix: Option<String>,
    pub connections: Option<i64>,
    pub timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub lease: Option<String>,
    pub ca_file: Option<String>,
    pub state_dir: Option<String>,
    pub snapshot_interval: Option<String>,
}

/// `[server]`: the public side.
#[derive(Debug, Default, Deserialize)]
pub struct ServerFile {
    pub listen: Option<Vec<String>>,
    #[serde(default)]
    pub tls: Vec<TlsListenFile>,
    pub threads: Option<i64>,
    pub grace_period: Option<String>,
    pub upstream_keepalive_pool: Option<i64>,
    pub work_stealing: Option<bool>,
    pub upgrade_sock: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub path_policy: Option<String>,
    pub header_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub request_id_header: Option<String>,
    pub max_connections: Option<i64>,
    pub h2c: Option<bool>,
    pub redirect_https: Option<bool>,
}

/// `[[server.tls]]`: a public listener that terminates TLS.
#[derive(Debug, Deserialize)]
pub struct TlsListenFile {
    pub listen: String,
    pub cert: String,
    pub key: String,
    pub hsts: Option<String>,
    pub hsts_include_subdomains: Option<bool>,
    pub hsts_preload: Option<bool>,
}

/// `[admin]`: the operator's side.
#[derive(Debug, Default, Deserialize)]
pub struct AdminFile {
    pub listen: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<String>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
pub struct LogFile {
    pub format: Option<String>,
    pub level: Option<String>,
}

/// `[[upstream]]`.
#[derive(Debug, Deserialize)]
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
    pub h2: Option<bool>,
}

/// `[[room]]`.
#[derive(Debug, Deserialize, Serialize)]
pub struct RoomFile {
    pub name: String,
    pub mode: String,
    pub capacity: i64,
    pub max_wait: Option<String>,
    pub rate: Option<String>,
    pub tokens_per_minute: Option<i64>,
    pub token_estimate: Option<i64>,
    pub usage_path: Option<String>,
    pub adaptive: Option<bool>,
    pub min_capacity: Option<i64>,
    pub fair_by: Option<String>,
    pub session_ttl: Option<String>,
    pub session_max: Option<String>,
    pub admit_rate: Option<f64>,
    pub max_queue: Option<i64>,
    pub poll_interval: Option<String>,
    pub heartbeat_timeout: Option<String>,
    pub rejoin_grace: Option<String>,
    pub claim_window: Option<String>,
    pub confirm_window: Option<String>,
    pub queue_status: Option<i64>,
    pub state: Option<String>,
    pub avg_session: Option<String>,
    pub page_template: Option<String>,
    pub language: Option<String>,
    pub cookie_path: Option<String>,
    pub priority_weight: Option<i64>,
    pub bypass: Option<RulesFile>,
    pub priority: Option<RulesFile>,
    pub conversion: Option<ConversionFile>,
    pub on_store_error: Option<String>,
    pub limits: Option<LimitsFile>,
    pub challenge: Option<String>,
    pub challenge_difficulty: Option<i64>,
    pub bind: Option<String>,
    pub invite_only: Option<bool>,
    #[serde(rename = "event", skip_serializing_if = "Vec::is_empty", default)]
    pub events: Vec<LaunchFile>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub codes: Vec<CodesFile>,
}

/// `[[room.event]]`: a launch at a set time.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct LaunchFile {
    pub name: String,
    pub prequeue_opens: String,
    pub starts: String,
    pub ends: Option<String>,
    pub shuffle: Option<bool>,
    pub capacity: Option<i64>,
    pub admit_rate: Option<f64>,
    pub page_template: Option<String>,
    pub message: Option<String>,
}

/// `[[room.codes]]`: invite or priority codes, as a file of their digests.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct CodesFile {
    pub file: String,
    pub lane: Option<String>,
    pub uses: Option<i64>,
}

/// `[room.limits]`.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct LimitsFile {
    pub tickets_per_client: Option<i64>,
    pub arrivals_per_minute: Option<i64>,
    pub polls_per_minute: Option<i64>,
    pub streams_per_ticket: Option<i64>,
    pub streams_per_client: Option<i64>,
    pub unknown_clients: Option<String>,
    pub client_prefix_v4: Option<i64>,
    pub client_prefix_v6: Option<i64>,
}

/// `[room.bypass]`, `[room.priority]`, `[route.bypass]`: which visitors a rule picks out.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RulesFile {
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub cidrs: Vec<String>,
    pub jwt: Option<String>,
}

/// `[room.conversion]`.
#[derive(Debug, Deserialize, Serialize)]
pub struct ConversionFile {
    pub method: Option<String>,
    pub path_prefix: String,
}

/// `[tokens]`.
#[derive(Debug, Deserialize)]
pub struct TokensFile {
    pub issuer: Option<String>,
    pub signing_key: String,
    pub signing_kid: Option<String>,
    #[serde(default)]
    pub verify_keys: Vec<VerifyKeyFile>,
    pub ticket_ttl: Option<String>,
    pub cache_size: Option<i64>,
}

/// An older public key: a path (kid = its thumbprint) or `{ file, kid }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum VerifyKeyFile {
    Path(String),
    WithKid(VerifyKeyTable),
}

/// `{ file = "...", kid = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyKeyTable {
    pub file: String,
    pub kid: String,
}

/// `[[jwt]]`: how to recognise the app's own tokens (logged-in users).
#[derive(Debug, Deserialize)]
pub struct JwtFile {
    pub name: String,
    pub cookie: Option<String>,
    pub header: Option<String>,
    pub algorithm: String,
    pub secret: Option<String>,
    pub secret_file: Option<String>,
    pub public_key: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// `[attribution]`.
#[derive(Debug, Default, Deserialize)]
pub struct AttributionFile {
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub campaigns: Vec<String>,
    pub consent_cookie: Option<String>,
    pub consent_values: Option<Vec<String>>,
}

/// `[[route]]`.
#[derive(Debug, Deserialize)]
pub struct RouteFile {
    pub name: Option<String>,
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub upstream: String,
    pub room: Option<String>,
    pub bypass: Option<RulesFile>,
    pub retry_429: Option<bool>,
    pub case_insensitive: Option<bool>,
}
